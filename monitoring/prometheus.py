"""Run a real Prometheus for a run folder: config, start, readiness, stop; or attach to an existing one.

Layout inside the run folder:  prometheus/{prometheus.yml, rules.yml, data/, prometheus.log, state.json}.
`state.json` lets another process (`parallax prometheus down`) find and stop the server.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import yaml

from monitoring.duration import prometheus_duration
from monitoring.ports import free_port
from monitoring.rules import write_rules

BINARY_ENV = "PARALLAX_PROMETHEUS"
SUBDIR = "prometheus"
STATE_FILE = "state.json"


class PrometheusLaunchError(Exception):
    """Prometheus could not be found, started, reached or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ScrapeTarget:
    """One static scrape target (a /metrics endpoint)."""

    job: str
    port: int
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class PrometheusHandle:
    """A Prometheus this process started (pid set) or attached to (attached=True); `folder` is where its
    files and state live ("" for an attached server recorded nowhere)."""

    url: str
    port: int
    folder: str
    pid: int | None = None
    attached: bool = False
    config_file: str = ""
    retention: str = "15d"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


def find_prometheus() -> str:
    """Path of the prometheus binary ($PARALLAX_PROMETHEUS, else PATH)."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise PrometheusLaunchError(f"{BINARY_ENV}={explicit} is not an executable file; fix or unset it")
        return explicit
    found = shutil.which("prometheus")
    if not found:
        raise PrometheusLaunchError("no `prometheus` binary on PATH; install it (`make setup`, or "
                                    f"`apt-get install prometheus`), set {BINARY_ENV}, or set "
                                    "monitoring.prometheus_url to use an existing server")
    return found


# prometheus_client ≥ 0.22 answers Prometheus's OpenMetrics scrape with `vllm_x` sample names for a
# metric named `vllm:x` (its HELP/TYPE keep the colon; prometheus/client_python#1177), so a plain vLLM
# server's metrics would be stored as `vllm_*`. Rename them back to vLLM's documented `vllm:` names.
# (The regex is anchored: Ray's `ray_vllm_*` names are untouched.)
def _vllm_colon_relabel() -> dict[str, Any]:
    return {"source_labels": ["__name__"], "regex": "vllm_(.+)", "target_label": "__name__", "replacement": "vllm:$1"}


def prometheus_config(targets: Sequence[ScrapeTarget], scrape_interval_s: float = 1.0,
                      rule_files: Sequence[str] = ()) -> dict[str, Any]:
    """prometheus.yml as data: one job per target name, static 127.0.0.1 targets."""
    interval = prometheus_duration(scrape_interval_s)
    jobs: dict[str, list[str]] = {}
    for t in targets:
        jobs.setdefault(t.job, []).append(t.address)
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": list(rule_files),
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": addrs}],
                            "metric_relabel_configs": [_vllm_colon_relabel()]} for job, addrs in jobs.items()],
    }


def _folder(run_dir: Path) -> Path:
    return run_dir / SUBDIR


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll `/-/ready` until it answers 200 (True), the process exits or the time is up (False)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{url}/-/ready").status_code == 200:
                    return True
            time.sleep(0.05)
    return False


def start_prometheus(run_dir: Path, targets: Sequence[ScrapeTarget], rules: dict[str, Any] | None = None,
                     port: int = 0, scrape_interval_s: float = 1.0, ready_timeout_s: float = 20.0,
                     retention: str = "15d") -> PrometheusHandle:
    """Write the config (and rules) into the run folder, start Prometheus on 127.0.0.1:`port` (0: a free
    one) with its storage there, wait until ready and record its state file."""
    binary = find_prometheus()
    folder = _folder(run_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    existing = read_state(run_dir)
    if existing is not None and not existing.attached and existing.pid and _alive(existing.pid):
        raise PrometheusLaunchError(f"a Prometheus (pid {existing.pid}) already runs for {run_dir} at "
                                    f"{existing.url}; stop it first with `parallax prometheus down`")
    rule_files = [str(write_rules(folder / "rules.yml", rules))] if rules else []
    config_file = folder / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(prometheus_config(targets, scrape_interval_s, rule_files), sort_keys=False))
    log = folder / "prometheus.log"
    for attempt in range(3):
        chosen = port or free_port()
        url = f"http://127.0.0.1:{chosen}"
        proc = _launch(binary, config_file, folder, chosen, retention)
        handle = PrometheusHandle(url=url, port=chosen, folder=str(folder), pid=proc.pid,
                                  config_file=str(config_file), retention=retention, _proc=proc)
        try:
            ready = wait_ready(url, ready_timeout_s, proc)
            if ready:
                _write_state(run_dir, handle)
                return handle
        except BaseException:
            _terminate(handle, 5.0)
            raise
        tail = _log_tail(log)
        _terminate(handle, 5.0)
        if "address already in use" in tail and not port and attempt < 2:
            continue  # the free port was taken in between: pick another one
        hint = f"; port {chosen} is in use, choose another one" if "address already in use" in tail else ""
        raise PrometheusLaunchError(f"Prometheus did not become ready within {ready_timeout_s:g} s{hint}; "
                                    f"its log ({log}) ends with:\n{tail}")
    raise AssertionError("unreachable")


def _launch(binary: str, config_file: Path, folder: Path, port: int, retention: str) -> subprocess.Popen[bytes]:
    """Prometheus on 127.0.0.1:`port`, its storage and log in `folder`, in a session of its own."""
    cmd = [binary, f"--config.file={config_file}", f"--storage.tsdb.path={folder / 'data'}",
           f"--storage.tsdb.retention.time={retention}", f"--web.listen-address=127.0.0.1:{port}"]
    with (folder / "prometheus.log").open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def restart_prometheus(handle: PrometheusHandle, ready_timeout_s: float = 20.0) -> tuple[float, float]:
    """Stop a Prometheus this process started and start it again on the same port, config and data (its
    series survive); `handle` then names the new process. (seconds to stop, seconds until ready again)."""
    if handle.attached or not handle.config_file:
        raise PrometheusLaunchError(f"the Prometheus at {handle.url} was not started here; restart it yourself")
    t0 = time.monotonic()
    _terminate(handle, 10.0)
    stopped = time.monotonic() - t0
    folder = Path(handle.folder)
    proc = _launch(find_prometheus(), Path(handle.config_file), folder, handle.port, handle.retention)
    handle.pid, handle._proc = proc.pid, proc
    if not wait_ready(handle.url, ready_timeout_s, proc):
        raise PrometheusLaunchError(f"Prometheus did not come back within {ready_timeout_s:g} s on port "
                                    f"{handle.port}; its log ({folder / 'prometheus.log'}) ends with:\n"
                                    f"{_log_tail(folder / 'prometheus.log')}")
    _write_state(folder.parent, handle)
    return stopped, time.monotonic() - t0


def reload_rules(handle: PrometheusHandle, rules: dict[str, Any]) -> Path:
    """Rewrite the rules file of a Prometheus this process started and have it load them (SIGHUP, as
    Prometheus documents for a configuration reload); an attached server's file is written for its owner to load."""
    path = write_rules(Path(handle.folder) / "rules.yml", rules)
    if not handle.attached and handle.pid is not None and _alive(handle.pid):
        os.kill(handle.pid, signal.SIGHUP)
    return path


def attach_prometheus(url: str, run_dir: Path | None = None, timeout_s: float = 5.0) -> PrometheusHandle:
    """Use a Prometheus that already runs at `url`; fails clearly when it is not ready."""
    url = url.rstrip("/")
    if not wait_ready(url, timeout_s):
        raise PrometheusLaunchError(f"the Prometheus at {url} (monitoring.prometheus_url) is not ready: "
                                    f"{url}/-/ready did not answer 200 within {timeout_s:g} s; check the URL")
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    folder = str(_folder(run_dir).resolve()) if run_dir else ""
    handle = PrometheusHandle(url=url, port=port, folder=folder, attached=True)
    if run_dir is not None:
        _write_state(run_dir, handle)
    return handle


def _write_state(run_dir: Path, handle: PrometheusHandle) -> None:
    folder = _folder(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).write_text(json.dumps(handle.state(), indent=2))


def read_state(run_dir: Path) -> PrometheusHandle | None:
    """The handle recorded in the run folder, or None when there is none."""
    path = _folder(run_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text())
        return PrometheusHandle(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise PrometheusLaunchError(f"{path}: unreadable state file ({e}); delete it and stop the "
                                    "server by hand if it still runs") from None


def _ours(handle: PrometheusHandle) -> bool:
    """The pid still belongs to the Prometheus we started (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{handle.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return handle.config_file in cmdline


def _terminate(handle: PrometheusHandle, timeout_s: float) -> None:
    proc, pid = handle._proc, handle.pid
    if proc is not None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    if pid is None or not _alive(pid) or not _ours(handle):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.02)


def stop_prometheus(handle: PrometheusHandle, timeout_s: float = 10.0) -> bool:
    """SIGTERM (then SIGKILL after `timeout_s`) a Prometheus we started and drop its state file.
    An attached server is left running. True when a process was stopped."""
    stopped = False
    if not handle.attached:
        stopped = handle.pid is not None and _alive(handle.pid)
        _terminate(handle, timeout_s)
    if handle.folder:
        with contextlib.suppress(FileNotFoundError):
            (Path(handle.folder) / STATE_FILE).unlink()
    return stopped


def stop_run(run_dir: Path, timeout_s: float = 10.0) -> PrometheusHandle | None:
    """Stop whatever the run folder's state file names; None when nothing was recorded there."""
    handle = read_state(run_dir)
    if handle is not None:
        stop_prometheus(handle, timeout_s)
    return handle


@contextlib.contextmanager
def running_prometheus(run_dir: Path, targets: Sequence[ScrapeTarget], rules: dict[str, Any] | None = None,
                       **kwargs: Any) -> Iterator[PrometheusHandle]:
    """start_prometheus as a context manager: stopped on exit, whatever happens."""
    handle = start_prometheus(run_dir, targets, rules, **kwargs)
    try:
        yield handle
    finally:
        stop_prometheus(handle)
