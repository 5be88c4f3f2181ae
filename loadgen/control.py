"""What a caller outside a running load may learn and do: when the schedule starts (its Unix time), and, in
a fault experiment, kill one of the load generator's workers as a crash would take it."""

import threading
from collections.abc import Callable, Sequence


class LoadControl:
    """Handed to `run_load`; thread-safe, so a caller's own thread may wait on it and act."""

    def __init__(self) -> None:
        self._started = threading.Event()
        self._lock = threading.Lock()
        self.epoch: float | None = None
        self._killers: list[Callable[[], str]] = []

    def started(self, epoch: float, killers: Sequence[Callable[[], str]] = ()) -> None:
        """The load generator's side: the schedule starts at `epoch`; `killers[k]` kills worker k and says how."""
        with self._lock:
            self.epoch = epoch
            self._killers = list(killers)
        self._started.set()

    def wait_start(self, timeout_s: float | None = None) -> float | None:
        """The schedule's start (Unix time), once known; None when not within `timeout_s`."""
        return self.epoch if self._started.wait(timeout_s) else None

    @property
    def workers(self) -> int:
        with self._lock:
            return len(self._killers)

    def kill_worker(self, index: int) -> str:
        """Kill worker `index` (its records so far are kept, and each request it had in flight gets one saying
        it died: loadgen/fleet.py); what was done. ValueError when there is no such worker."""
        with self._lock:
            killers = list(self._killers)
        if not 0 <= index < len(killers):
            raise ValueError(f"no load generator worker {index}: the load runs "
                             + (f"{len(killers)} workers" if killers else "in this process, without workers"))
        return killers[index]()
