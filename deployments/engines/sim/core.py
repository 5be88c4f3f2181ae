"""The event-driven heart of one simulated replica: arrivals, iterations and the PP pipeline.

Time is simulated seconds and only moves through `run_until`, so the same code runs offline
(virtual time, as fast as possible) and in real time (the caller maps wall time to simulated time).

With PP = p (the scheduler's `microbatches`), up to p micro-batches are in flight: a new one may start
once the previous one has cleared the slowest stage (`stage_s` after it started), and each completes
`latency_s` after its start (never before the micro-batch ahead of it). A decoding sequence is in at most
one micro-batch, so a single request decodes no faster, while many requests keep every stage busy; the
scheduler gives each micro-batch its share of the sequences and of the token budget (scheduler.py).

Disaggregation: a prefill replica's scheduler keeps each finished sequence's KV blocks until `release_kv`.
A decode replica takes handed-off sequences (`submit_handoff`: a prompt whose first token a prefill replica
sampled), queues them first come first served until its scheduler can reserve their blocks, then copies
their KV cache for the handoff's `transfer_s` (pulled by the decode side once it has room, as vLLM's NIXL
connector does, after the prefill ended: no layer-wise overlap). When it has arrived the first token is
delivered (it travels with the KV cache) and the sequence decodes from the next step on; `on_received` says
so (the prefill replica may then free its copy). Transfer seconds are summed in
`term_seconds["kv_transfer"]`.
"""

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from deployments.engines.sim.scheduler import Batch, Scheduler
from deployments.engines.sim.sequence import Sequence, Status
from deployments.engines.sim.work import CostModel


@dataclass(slots=True)
class MicroBatch:
    batch: Batch
    start: float
    end: float


class EngineCore:
    """Scheduler + cost model + pipeline state of one replica."""

    def __init__(self, scheduler: Scheduler, cost_model: CostModel, max_model_len: int | None = None,
                 on_finish: Callable[[Sequence, float], None] | None = None,
                 on_received: Callable[[Sequence, float], None] | None = None):
        self.scheduler = scheduler
        self.cost_model = cost_model
        self.pp = scheduler.microbatches
        self.max_model_len = min(max_model_len or scheduler.blocks.capacity_tokens, scheduler.blocks.capacity_tokens)
        self.on_finish = on_finish
        self.on_received = on_received
        self.now = 0.0
        self.term_seconds: dict[str, float] = {}   # Σ over iterations of each cost term
        self.iterations = 0
        self.peak_batch = 0
        self._arrivals: list[tuple[float, int, Sequence]] = []
        self._counter = 0
        self._in_flight: deque[MicroBatch] = deque()
        self._next_start = 0.0
        self._last_end = 0.0
        self._blocked = False   # the last attempt found nothing to run; wait for an arrival or completion
        self._unfinished = 0
        self._handoffs: list[tuple[float, int, Sequence, float]] = []   # (arrival, n, sequence, transfer_s)
        self._incoming: deque[tuple[Sequence, float]] = deque()         # arrived, waiting for KV blocks
        self._transfers: list[tuple[float, int, Sequence]] = []          # (KV arrives, n, sequence)

    @property
    def load(self) -> int:
        """Requests submitted and not finished: what a least-loaded dispatcher compares."""
        return self._unfinished

    def check(self, seq: Sequence) -> None:
        """Raise ValueError when `seq` could never fit this replica."""
        if seq.prompt_len + seq.max_tokens > self.max_model_len:
            raise ValueError(
                f"request {seq.request_id}: prompt ({seq.prompt_len}) + max_tokens ({seq.max_tokens}) tokens "
                f"exceed this replica's {self.max_model_len}-token limit (KV cache / max_model_len); "
                "send a shorter request")

    def submit(self, seq: Sequence, at: float) -> None:
        """Queue `seq` to arrive at simulated time `at` (not earlier than now)."""
        self.check(seq)
        seq.arrival = max(at, self.now)
        heapq.heappush(self._arrivals, (seq.arrival, self._counter, seq))
        self._counter += 1
        self._unfinished += 1

    def submit_handoff(self, seq: Sequence, at: float, transfer_s: float) -> None:
        """A decode replica takes `seq` (nothing computed yet) at simulated time `at`: its prompt's KV cache and
        first token, copied in `transfer_s` seconds once blocks are reserved for it."""
        self.check(seq)
        heapq.heappush(self._handoffs, (max(at, self.now), self._counter, seq, transfer_s))
        self._counter += 1
        self._unfinished += 1

    def release_kv(self, seq: Sequence) -> None:
        """A prefill replica frees the KV blocks of a finished sequence (its decode replica has them)."""
        self.scheduler.release(seq)
        self._blocked = False

    def abort(self, seq: Sequence) -> None:
        if seq.done:
            return
        if seq.status == Status.PENDING:
            self._arrivals = [a for a in self._arrivals if a[2] is not seq]
            self._handoffs = [h for h in self._handoffs if h[2] is not seq]
            self._incoming = deque(i for i in self._incoming if i[0] is not seq)
            heapq.heapify(self._arrivals)
            heapq.heapify(self._handoffs)
            seq.status = Status.ABORTED
        else:
            if seq.status == Status.RECEIVING:
                self._transfers = [x for x in self._transfers if x[2] is not seq]
                heapq.heapify(self._transfers)
            self.scheduler.abort(seq)
        self._unfinished -= 1
        self._blocked = False
        self._admit_handoffs(self.now)   # its blocks may let the next handoff in

    def next_event_time(self) -> float:
        """Simulated time of the next thing that can happen; inf when idle."""
        t = self._arrivals[0][0] if self._arrivals else math.inf
        if self._in_flight and self._in_flight[0].end < t:
            t = self._in_flight[0].end
        if self._handoffs and self._handoffs[0][0] < t:
            t = self._handoffs[0][0]
        if self._transfers and self._transfers[0][0] < t:
            t = self._transfers[0][0]
        if len(self._in_flight) < self.pp and not self._blocked and self.scheduler.has_ready:
            t = min(t, max(self._next_start, self.now))
        return t

    def run_until(self, t: float) -> list[MicroBatch]:
        """Process every event up to simulated time `t`; return the micro-batches that completed."""
        done: list[MicroBatch] = []
        sched = self.scheduler
        while True:
            te = self.next_event_time()
            if te > t or te == math.inf:
                break
            self.now = te
            while self._in_flight and self._in_flight[0].end <= te:
                mb = self._in_flight.popleft()
                for seq in sched.complete(mb.batch, mb.end):
                    self._unfinished -= 1
                    if self.on_finish is not None:
                        self.on_finish(seq, mb.end)
                done.append(mb)
                self._blocked = False
            while self._transfers and self._transfers[0][0] <= te:
                seq = heapq.heappop(self._transfers)[2]
                if seq.status == Status.RECEIVING:   # else aborted meanwhile
                    seq.num_output = 1
                    seq.first_token_time = te
                    seq.token_times.append(te)
                    sched.add_received(seq)
                    self._blocked = False
                    if self.on_received is not None:
                        self.on_received(seq, te)
            while self._arrivals and self._arrivals[0][0] <= te:
                sched.add(heapq.heappop(self._arrivals)[2])
                self._blocked = False
            while self._handoffs and self._handoffs[0][0] <= te:
                _, _, seq, transfer_s = heapq.heappop(self._handoffs)
                self._incoming.append((seq, transfer_s))   # PENDING until its blocks are reserved
            if len(self._in_flight) < self.pp and te >= self._next_start and not self._blocked:
                self._start(te)
            self._admit_handoffs(te)   # after this step's decodes took their blocks
        if t != math.inf and t > self.now:
            self.now = t
        return done

    def _admit_handoffs(self, te: float) -> None:
        """Reserve blocks for the handoffs that wait, first come first served, and start copying their KV."""
        while self._incoming and self.scheduler.reserve(self._incoming[0][0]):
            seq, transfer_s = self._incoming.popleft()
            heapq.heappush(self._transfers, (te + transfer_s, self._counter, seq))
            self._counter += 1
            self.term_seconds["kv_transfer"] = self.term_seconds.get("kv_transfer", 0.0) + transfer_s

    def _start(self, te: float) -> None:
        batch = self.scheduler.schedule()
        if batch is None:
            self._blocked = True
            return
        cost = self.cost_model.step(batch.shape)
        if cost.latency_s <= 0 or cost.stage_s <= 0:
            raise ValueError(f"cost model returned a non-positive step time for {batch.shape}")
        end = max(te + cost.latency_s, self._last_end + cost.stage_s)
        self._in_flight.append(MicroBatch(batch, te, end))
        self._next_start = te + cost.stage_s
        self._last_end = end
        self.iterations += 1
        n = batch.shape.num_seqs
        if n > self.peak_batch:
            self.peak_batch = n
        terms = self.term_seconds
        for k, v in cost.terms.items():
            terms[k] = terms.get(k, 0.0) + v
