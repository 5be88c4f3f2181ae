"""`parallax down` after the process holding Ray crashed (SIGKILL) leaves nothing running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from deployments.daemon import UpState
from tests.integration.ray_cluster import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SCENARIO = {
    "name": "crash",
    "model": "llama-3.1-8b",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1},
    "configurations": [{"name": "tp1", "tp": 1}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 1000},
                 "input": {"kind": "fixed", "value": 10}, "output": {"kind": "fixed", "value": 4}}],
}


def leftovers(sid: int, temp_dir: str) -> list[str]:
    """Live processes of the crashed holder's session (Ray's workers each lead a process group of their
    own, named ray::… so their command line does not show the temp dir) or naming its Ray temp dir."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[0] != "Z" and (int(stat[3]) == sid or temp_dir in cmd):
            out.append(f"{d.name}: {cmd[:120]}")
    return out


def test_down_after_a_crash_leaves_nothing_running(tmp_path: Path) -> None:
    scenario = tmp_path / "crash.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    env = {**os.environ, "PARALLAX_STATE_DIR": str(tmp_path / "state")}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    cli = [sys.executable, "-m", "controllers.cli.app"]
    up = subprocess.run([*cli, "up", str(scenario), "--port", str(port), "--metrics-port", str(free_port()),
                         "--timeout", "180"], env=env, capture_output=True, text=True, timeout=400)
    state_file = tmp_path / "state" / "crash.json"
    st = UpState.read(state_file) if state_file.exists() else None
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        assert st is not None and st.pid and st.temp_dir
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        os.kill(st.pid, signal.SIGKILL)  # the crash: no teardown ran
        time.sleep(1.0)
        assert leftovers(st.pid, st.temp_dir), "Ray outlives its holder: the case `down` must clean up"
        t0 = time.monotonic()
        down = subprocess.run([*cli, "down", "crash"], env=env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        assert down.returncode == 0, down.stdout + down.stderr
        wait_until(lambda: not leftovers(st.pid, st.temp_dir), 30,
                   lambda: f"`down` to leave nothing running: {leftovers(st.pid, st.temp_dir)}")
        assert not state_file.exists() and not Path(st.temp_dir).exists()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        print(f"\nFIGURE down-after-crash: down_s={took:.2f}", flush=True)
    finally:
        if st is not None and st.pid:
            for pid in leftovers(st.pid, st.temp_dir or "/nonexistent"):
                os.kill(int(pid.split(":")[0]), signal.SIGKILL)
