"""Ctrl-C during `parallax run`: the load stops, everything is torn down, the run folder is still written."""

import glob
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SCENARIO = {
    "name": "interrupt", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 1},
    "engine": {"kind": "sim", "time_scale": 2, "stream_interval_ms": 100},
    "configurations": [{"name": "tp8", "tp": 8}],
    "server": {"port": 0},
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 450, "tpot_ms": 40},
                 "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 16}}],
    "load": {"arrival": {"kind": "poisson", "rate": 2.0}, "duration_s": 300},
    "controller": {"interval_s": 1, "window_s": 10, "min_samples": 3},
}


def _processes_mentioning(*needles: str) -> list[str]:
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            text = Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in text for n in needles):
            found.append(text[:200])
    return found


def test_ctrl_c_tears_down_and_still_writes_the_run_folder(tmp_path: Path) -> None:
    src = tmp_path / "interrupt.yaml"
    src.write_text(yaml.safe_dump(SCENARIO))
    ray_dirs_before = set(glob.glob("/tmp/px-ray-*"))
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "controllers.cli.app", "run", str(src), "--out", str(out)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        records: list[Path] = []

        def loading() -> bool:
            nonlocal records
            assert proc.poll() is None, "the run ended before its load had sent 10 requests"
            records = list(out.glob("interrupt-*/records.jsonl"))
            return bool(records) and len(records[0].read_text().splitlines()) >= 10

        wait_until(loading, 120, "the run's first 10 records", 1)
        ray_dirs = set(glob.glob("/tmp/px-ray-*")) - ray_dirs_before
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    assert "interrupted" in output
    folder = records[0].parent
    assert (folder / "report.html").exists() and (folder / "scoreboard.csv").exists()
    assert ray_dirs and not any(Path(d).exists() for d in ray_dirs)
    wait_until(lambda: not _processes_mentioning(str(folder), *ray_dirs), 30,   # Prometheus, raylet, workers …
               lambda: f"every process of the run to end: {_processes_mentioning(str(folder), *ray_dirs)}")
