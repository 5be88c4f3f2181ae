"""The stress tier's CPU hog: it pins itself to the core asked for, keeps it busy, and ends cleanly on
SIGTERM."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_the_hog_spins_on_its_core_and_stops_on_sigterm() -> None:
    core = sorted(os.sched_getaffinity(0))[0]
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.cpu_hog", "--core", str(core)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and "spinning" in proc.stdout.readline()
        assert os.sched_getaffinity(proc.pid) == {core}
        start = _cpu_s(proc.pid)
        wait_until(lambda: _cpu_s(proc.pid) - start >= 0.3, 30, "the hog to burn 0.3 s of CPU", 0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_core_it_may_not_use_is_refused_in_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "tests.support.cpu_hog", "--core", "9999"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "--core 9999: this process may use cores" in out.stderr
    assert "Traceback" not in out.stderr
