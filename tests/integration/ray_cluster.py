"""A real multi-node Ray cluster on one machine, for tests: a head and workers started with
`ray start`, each declaring its own logical GPUs and a `parallax_node_<name>` resource to tell them
apart, on free ports and a private temp dir. Stopped by process group: never `ray stop` (that would
also stop other users' clusters on this machine)."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from monitoring.ports import free_port

RAY = str(Path(sys.executable).with_name("ray"))


def _ports(*flags: str) -> list[str]:
    out = []
    for f in flags:
        out += [f, str(free_port())]
    return out


@dataclass
class LocalCluster:
    address: str
    temp_dir: Path
    env: dict[str, str]
    pgids: list[int] = field(default_factory=list)

    def add_node(self, name: str, gpus: int, cpus: int = 2) -> None:
        """Start a worker node that joins the head."""
        self._start(["--address", self.address], name, gpus, cpus, [])

    def _start(self, first: list[str], name: str, gpus: int, cpus: int, extra: list[str]) -> None:
        cmd = [RAY, "start", *first, "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
               "--num-gpus", str(gpus), "--resources", f'{{"parallax_node_{name}": 1}}',
               "--temp-dir", str(self.temp_dir), "--min-worker-port", "0", "--max-worker-port", "0",
               "--disable-usage-stats", *extra,
               *_ports("--object-manager-port", "--node-manager-port", "--dashboard-agent-listen-port",
                       "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")]
        p = subprocess.Popen(cmd, env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        self.pgids.append(p.pid)  # the daemons `ray start` leaves behind keep its process group
        out, _ = p.communicate(timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"ray start failed ({p.returncode}):\n{out[-3000:]}")

    def stop(self) -> None:
        """Kill this cluster's processes only, then remove its files."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in self.pgids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.running_pids():
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def running_pids(self) -> list[int]:
        """Processes still alive whose command line names this cluster's temp dir or process groups."""
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                pgid = os.getpgid(int(d.name))
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, ProcessLookupError):
                continue
            if state != "Z" and (str(self.temp_dir) in cmdline or pgid in self.pgids):
                pids.append(int(d.name))
        return pids


@contextlib.contextmanager
def driver_env(cluster: LocalCluster) -> Iterator[None]:
    """This process as a driver of `cluster`: RAY_ADDRESS and token auth, as a user's shell would set them.

    Ray reads RAY_AUTH_MODE into its config when imported; re-reading it (as Ray's own tests do) lets
    one test process attach to a token-auth cluster and later start an unauthenticated local one.
    """
    from ray._raylet import Config

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ADDRESS", cluster.address)
        mp.setenv("RAY_AUTH_MODE", "token")
        Config.initialize("")
        try:
            yield
        finally:
            mp.undo()
            Config.initialize("")


@contextlib.contextmanager
def local_cluster(head_gpus: int, head_cpus: int = 2) -> Iterator[LocalCluster]:
    """A head node named `head`; add workers with `add_node`. Ray's token auth on, as `ray start` wants."""
    temp_dir = Path(tempfile.mkdtemp(prefix="pxops", dir="/tmp"))  # short: Unix socket paths are limited
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    cluster = LocalCluster(address=f"127.0.0.1:{port}", temp_dir=temp_dir, env=env)
    try:
        cluster._start(["--head", "--port", str(port)], "head", head_gpus, head_cpus,
                       ["--include-dashboard", "false", *_ports("--dashboard-port", "--ray-client-server-port")])
        yield cluster
    finally:
        cluster.stop()
