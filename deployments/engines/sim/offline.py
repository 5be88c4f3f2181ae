"""Virtual-time runs: a workload through R replicas as fast as the CPU allows.

Open loop: every request arrives at its own time. Closed loop (`concurrency=C`): C users, each
sending its next request the moment its previous one finishes. Requests go to the least loaded
replica (fewest unfinished requests; the lowest index on a tie), as a data-parallel router would, or
to the replica a request names (a replay of a live run, where the records say which replica served it).
"""

import heapq
import math
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from deployments.engines.sim.core import EngineCore
from deployments.engines.sim.sequence import Sequence


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload; `arrival` is ignored in closed loop."""

    prompt_len: int
    output_len: int
    arrival: float = 0.0
    tag: str = ""   # e.g. the SLA class
    replica: int | None = None   # the replica it goes to; None: the least loaded


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request, in simulated seconds.

    `replica`: the index, in the run's `cores`, of the replica that produced its last token; a disaggregated
    run also names the prefill replica (`prefill_replica`, same indexing) and the KV handoff's duration."""

    request_id: str
    tag: str
    replica: int
    prompt_len: int
    output_len: int
    arrival: float
    first_token: float
    finish: float
    preemptions: int
    token_times: list[float] = field(repr=False)
    prefill_replica: int | None = None
    kv_transfer_s: float = 0.0

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival

    @property
    def e2e(self) -> float:
        return self.finish - self.arrival

    @property
    def tpot(self) -> float:
        """Mean time per output token after the first (0 for one-token outputs)."""
        return (self.finish - self.first_token) / (self.output_len - 1) if self.output_len > 1 else 0.0


@dataclass
class OfflineResult:
    records: list[RequestRecord]
    cores: list[EngineCore]

    @property
    def makespan(self) -> float:
        """From the first arrival to the last finish."""
        if not self.records:
            return 0.0
        return max(r.finish for r in self.records) - min(r.arrival for r in self.records)


class Arrivals:
    """When each request of a workload arrives: at its own time (open loop), or, with `concurrency` C, as
    soon as one of C users' previous request has finished (`finished`)."""

    def __init__(self, requests: Seq[RequestSpec], concurrency: int | None = None):
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._n = len(requests)
        self._closed = concurrency is not None
        if concurrency is None:
            self._pending = [(r.arrival, i) for i, r in enumerate(requests)]
            heapq.heapify(self._pending)
            self._next = self._n
        else:
            self._next = min(concurrency, self._n)
            self._pending = [(0.0, i) for i in range(self._next)]

    def next_time(self) -> float:
        return self._pending[0][0] if self._pending else math.inf

    def due(self, t: float) -> list[int]:
        """The requests (indices) that arrive by `t`, in arrival order."""
        out = []
        while self._pending and self._pending[0][0] <= t:
            out.append(heapq.heappop(self._pending)[1])
        return out

    def finished(self, t: float) -> None:
        """A request ended at `t`: in closed loop its user sends the next one."""
        if self._closed and self._next < self._n:
            heapq.heappush(self._pending, (t, self._next))
            self._next += 1


def run_events(cores: Seq[EngineCore], arrivals: Arrivals, dispatch: Callable[[int, float], None]) -> None:
    """Advance `cores` together in virtual time, handing each request to `dispatch(index, time)` when it
    arrives, until nothing is left to happen."""
    while True:
        t = arrivals.next_time()
        for core in cores:
            t = min(t, core.next_event_time())
        if t == math.inf:
            return
        for i in arrivals.due(t):
            dispatch(i, t)
        for core in cores:
            core.run_until(t)


def least_loaded(cores: Seq[EngineCore]) -> int:
    """The core with the fewest unfinished requests (the lowest index on a tie), as a data-parallel router
    picks."""
    return min(range(len(cores)), key=lambda j: cores[j].load) if len(cores) > 1 else 0


def run_offline(make_core: Callable[[], EngineCore], requests: Seq[RequestSpec], replicas: int = 1,
                concurrency: int | None = None) -> OfflineResult:
    """Simulate `requests` through `replicas` fresh cores; records come back in request order."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    if any(r.replica is not None and not 0 <= r.replica < replicas for r in requests):
        raise ValueError(f"a request names a replica outside 0..{replicas - 1}")
    arrivals = Arrivals(requests, concurrency)
    seqs: dict[int, Sequence] = {}
    where: dict[int, int] = {}
    cores = [make_core() for _ in range(replicas)]
    for core in cores:
        core.on_finish = lambda seq, t: arrivals.finished(t)

    def dispatch(i: int, t: float) -> None:
        r = requests[i]
        k = r.replica if r.replica is not None else least_loaded(cores)
        seq = Sequence(str(i), r.prompt_len, r.output_len)
        cores[k].submit(seq, t)
        seqs[i] = seq
        where[i] = k

    run_events(cores, arrivals, dispatch)
    records = []
    for i, r in enumerate(requests):
        seq = seqs[i]
        if seq.finish_time is None or seq.first_token_time is None:
            raise RuntimeError(f"request {i} did not finish")  # the scheduler's liveness invariant
        records.append(RequestRecord(
            request_id=seq.request_id, tag=r.tag, replica=where[i], prompt_len=r.prompt_len,
            output_len=r.output_len, arrival=seq.arrival, first_token=seq.first_token_time,
            finish=seq.finish_time, preemptions=seq.preemptions, token_times=seq.token_times,
        ))
    return OfflineResult(records, cores)
