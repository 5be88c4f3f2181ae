"""How soon the command line answers: the median wall time of N fresh `parallax` processes per command,
each against its target.

Run: .venv/bin/python -m bench.cli_speed [--runs N]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (what, the arguments after `parallax`, the target in seconds)
COMMANDS = (("parallax --help", ["--help"], 0.5),
            ("parallax validate scenarios/demo.yaml", ["validate", "scenarios/demo.yaml"], 1.0))


def wall_s(args: list[str]) -> float:
    """Seconds one fresh process takes to run `parallax ARGS` to its end (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "controllers.cli.app", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command (the median is kept)")
    runs = parser.parse_args().runs
    for what, args, target in COMMANDS:
        wall_s(args)  # warm the file cache: every figure is a warm start
        times = [wall_s(args) for _ in range(runs)]
        median = statistics.median(times)
        print(f"{what:<40} median {median:5.2f} s (min {min(times):.2f}, max {max(times):.2f}, n={runs})  "
              f"target ≤ {target:g} s: {'met' if median <= target else 'MISSED'}", flush=True)


if __name__ == "__main__":
    main()
