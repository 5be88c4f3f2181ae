"""The tests' one way to wait: poll a condition until it holds, with a deadline, never a fixed window."""

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], deadline_s: float, what: str | Callable[[], str],
               poll_s: float = 0.2) -> float:
    """Poll `condition` every `poll_s` seconds until it is truthy; the seconds that took. Past `deadline_s`
    (one last look included) an AssertionError names what was awaited (`what`, or what it returns then: the
    state that was still missing) and how long it waited."""
    t0 = time.monotonic()
    while not condition():
        waited = time.monotonic() - t0
        if waited > deadline_s:
            awaited = what if isinstance(what, str) else what()
            raise AssertionError(f"waited {waited:.1f} s (deadline {deadline_s:g} s) for {awaited}: it never held")
        time.sleep(poll_s)
    return time.monotonic() - t0
