"""A busy loop pinned to one core, until killed: the load `make test-stress` runs the integration tier under.

Run: python -m tests.support.cpu_hog [--core N]   (default: the last core this process may use)
It ends on SIGTERM or SIGINT (exit 0) and leaves nothing behind: no files, no child processes.
"""

import argparse
import os
import signal
import sys
from types import FrameType


def hog(core: int) -> None:
    """Spin on `core` until SIGTERM or SIGINT."""
    os.sched_setaffinity(0, {core})
    print(f"cpu_hog: pid {os.getpid()} spinning on core {core}", flush=True)  # pinned by now
    running = True

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    spins = 0
    while running:
        spins += 1


def main() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", type=int, default=allowed[-1], help=f"the core to pin to, one of {allowed}")
    core = parser.parse_args().core
    if core not in allowed:
        sys.exit(f"--core {core}: this process may use cores {allowed}; give one of them")
    hog(core)


if __name__ == "__main__":
    main()
