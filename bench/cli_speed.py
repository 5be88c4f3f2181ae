"""How soon the command line answers: the median wall time of N fresh `parallax` processes per command,
each against its target, and the median CPU time they used (user + system: what the wall time would be on
an idle machine, less the disk; on a shared machine the wall time also counts the wait for a core).

Run: .venv/bin/python -m bench.cli_speed [--runs N]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (what, the arguments after `parallax`, the target in seconds)
COMMANDS = (("parallax --help", ["--help"], 0.5),
            ("parallax validate scenarios/demo.yaml", ["validate", "scenarios/demo.yaml"], 1.0))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds one fresh process takes to run `parallax ARGS` to its end (it must succeed)."""
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "controllers.cli.app", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0, _children_cpu_s() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command (the median is kept)")
    runs = parser.parse_args().runs
    for what, args, target in COMMANDS:
        timed(args)  # warm the file cache: every figure is a warm start
        walls, cpus = zip(*(timed(args) for _ in range(runs)), strict=True)
        median = statistics.median(walls)
        print(f"{what:<40} wall median {median:5.2f} s (min {min(walls):.2f}, max {max(walls):.2f}, n={runs}), "
              f"CPU median {statistics.median(cpus):.2f} s; target ≤ {target:g} s: "
              f"{'met' if median <= target else 'MISSED'}", flush=True)
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
