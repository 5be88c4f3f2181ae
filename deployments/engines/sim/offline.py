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
    """What happened to one request, in simulated seconds."""

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


def run_offline(make_core: Callable[[], EngineCore], requests: Seq[RequestSpec], replicas: int = 1,
                concurrency: int | None = None) -> OfflineResult:
    """Simulate `requests` through `replicas` fresh cores; records come back in request order."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if any(r.replica is not None and not 0 <= r.replica < replicas for r in requests):
        raise ValueError(f"a request names a replica outside 0..{replicas - 1}")
    seqs: dict[int, Sequence] = {}
    where: dict[int, int] = {}
    pending: list[tuple[float, int]] = []     # (arrival, request index), dispatched when reached
    next_closed = 0

    def on_finish(seq: Sequence, t: float) -> None:
        nonlocal next_closed
        if concurrency is not None and next_closed < len(requests):
            heapq.heappush(pending, (t, next_closed))
            next_closed += 1

    cores = [make_core() for _ in range(replicas)]
    for core in cores:
        core.on_finish = on_finish
    if concurrency is None:
        pending = [(r.arrival, i) for i, r in enumerate(requests)]
        heapq.heapify(pending)
    else:
        next_closed = min(concurrency, len(requests))
        pending = [(0.0, i) for i in range(next_closed)]

    while True:
        t = pending[0][0] if pending else math.inf
        for core in cores:
            t = min(t, core.next_event_time())
        if t == math.inf:
            break
        while pending and pending[0][0] <= t:
            _, i = heapq.heappop(pending)
            r = requests[i]
            k = r.replica if r.replica is not None else (
                min(range(replicas), key=lambda j: cores[j].load) if replicas > 1 else 0)
            seq = Sequence(str(i), r.prompt_len, r.output_len)
            cores[k].submit(seq, t)
            seqs[i] = seq
            where[i] = k
        for core in cores:
            core.run_until(t)

    records = []
    for i in range(len(requests)):
        seq = seqs[i]
        if seq.finish_time is None or seq.first_token_time is None:
            raise RuntimeError(f"request {i} did not finish")  # the scheduler's liveness invariant
        r = requests[i]
        records.append(RequestRecord(
            request_id=seq.request_id, tag=r.tag, replica=where[i], prompt_len=r.prompt_len,
            output_len=r.output_len, arrival=seq.arrival, first_token=seq.first_token_time,
            finish=seq.finish_time, preemptions=seq.preemptions, token_times=seq.token_times,
        ))
    return OfflineResult(records, cores)
