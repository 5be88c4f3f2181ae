"""Session-wide hooks: how the test process ends."""

import atexit
import os
import sys

import pytest

EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Once the session is over, run the exit handlers and leave without the interpreter's finalization.

    Several tests start and stop Ray in this process, more than once. Threads outlive `ray.shutdown()`:
    Serve's router event loop (a daemon thread that keeps running) and Ray's gRPC and io threads, which
    may touch a core worker that is gone (ray-project/ray#31145). During finalization they race the C++
    destructors: CI saw this process segfault after "757 passed". The exit handlers (temporary folders,
    multiprocessing children, Ray's own) still run here; then the process exits with pytest's status.
    """
    if "ray" not in sys.modules:
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(config.stash.get(EXIT_STATUS, 1))
