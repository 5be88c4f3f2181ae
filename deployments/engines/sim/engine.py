"""`SimEngine`: the simulated engine in real time, behind the Engine protocol of an LLMServer replica.

The scheduler and event core are the offline ones; here the simulated clock follows the wall clock,
`EngineConfig.time_scale` wall seconds per simulated second. One event-loop timer is armed for the
wall time of the next simulated event; when it fires, the core runs up to "now" and the streams
whose sequences produced tokens are woken, so every token is delivered when the simulated clock
reaches it. Arrivals and aborts re-arm the timer.
"""

import asyncio
import math
import time
import zlib
from collections.abc import AsyncIterator

from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec
from deployments.engines.base import EngineStats, GenerationRequest, TokenChunk
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.sequence import Sequence, Status
from schema.deployment import DeploymentSpec, ParallelConfig

# The words the simulated model "generates": one per token, chosen deterministically.
VOCAB = (
    "the", "model", "serves", "tokens", "across", "pipeline", "stages", "while", "tensor", "shards",
    "reduce", "every", "layer", "and", "cache", "keys", "values", "in", "paged", "blocks", "so",
    "batches", "grow", "until", "memory", "runs", "out", "then", "requests", "wait", "for", "their", "turn",
)


def count_prompt_tokens(prompt: str) -> int:
    """The sim engine's tokenizer contract: a prompt's token count is its number of whitespace-separated
    words. The load generator synthesises N-word prompts for N-token requests when it has no real tokenizer.
    """
    return len(prompt.split())


def output_words(seed: int, request_id: str, start: int, stop: int) -> str:
    """Text of output tokens [start, stop) of a request: one space-prefixed word per token."""
    base = zlib.crc32(f"{seed}:{request_id}".encode())
    return "".join(" " + VOCAB[(base + 2654435761 * i) % 4294967291 % len(VOCAB)] for i in range(start, stop))


class _Stream:
    __slots__ = ("event", "seq")

    def __init__(self, seq: Sequence):
        self.seq = seq
        self.event = asyncio.Event()


class SimEngine:
    """One simulated TP×PP replica of `spec.model` on `gpu`, streaming in (scaled) real time."""

    def __init__(self, spec: DeploymentSpec, parallel: ParallelConfig, model: ModelSpec, gpu: GpuSpec):
        factory = ReplicaFactory.for_deployment(spec, parallel, model, gpu)
        self.core = factory()
        self._perf = factory.cost_model
        self._slow: dict[int, float] = {}   # rank -> its speed, while slowed
        self.plan = factory.plan
        self.seed = spec.engine.seed
        self.time_scale = spec.engine.time_scale
        self._stream_interval = spec.engine.stream_interval_ms / 1e3 / self.time_scale   # simulated seconds
        self._streams: dict[str, _Stream] = {}
        self._t0 = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None

    # --- clocks ----------------------------------------------------------------------------------
    def sim_time(self, wall: float | None = None) -> float:
        """Simulated seconds at monotonic wall time `wall` (now by default)."""
        return ((time.monotonic() if wall is None else wall) - self._t0) / self.time_scale

    def wall_time(self, sim: float) -> float:
        """Monotonic wall time at which the simulated clock reads `sim`."""
        return self._t0 + sim * self.time_scale

    # --- Engine protocol -----------------------------------------------------------------------
    async def start(self) -> None:
        if self._loop is not None:
            return
        self._t0 = time.monotonic()
        self._loop = asyncio.get_running_loop()

    def count_prompt_tokens(self, prompt: str) -> int:
        return count_prompt_tokens(prompt)

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Check the request now (ValueError if it can never fit); it joins the engine when the caller
        starts iterating, at `request.arrival_time` if set, and streams its tokens as the simulated
        clock reaches them.
        """
        if self._loop is None:
            raise RuntimeError("SimEngine.start() was not awaited")
        if self._error is not None:
            raise RuntimeError(f"the simulated engine failed ({self._error})")
        n_prompt = (len(request.prompt_token_ids) if request.prompt_token_ids is not None
                    else count_prompt_tokens(request.prompt))
        if request.request_id in self._streams:
            raise ValueError(f"request id {request.request_id!r} is already streaming; use a unique id")
        seq = Sequence(request.request_id, n_prompt, request.max_tokens)
        self.core.check(seq)
        arrival = self.sim_time(request.arrival_time) if request.arrival_time > self._t0 else None
        return self._stream(seq, arrival)

    async def _stream(self, seq: Sequence, arrival: float | None) -> AsyncIterator[TokenChunk]:
        """Submit when the caller starts iterating (an unstarted stream holds nothing), then stream."""
        self.core.submit(seq, self.sim_time() if arrival is None else arrival)
        stream = _Stream(seq)
        self._streams[seq.request_id] = stream
        self._arm()
        sent = 0
        last_sent = -math.inf
        try:
            while True:
                await stream.event.wait()
                stream.event.clear()
                if self._error is not None:
                    raise RuntimeError("the simulated engine stopped") from self._error
                if seq.status == Status.ABORTED:
                    yield TokenChunk("", 0, finished=True, finish_reason="abort", prompt_tokens=0)
                    return
                n = seq.num_output
                finished = seq.status == Status.FINISHED
                if n == sent or (not finished and sent and seq.token_times[n - 1] - last_sent < self._stream_interval):
                    continue
                chunk = TokenChunk(output_words(self.seed, seq.request_id, sent, n), n - sent, finished=finished,
                                   finish_reason="length" if finished else None,
                                   prompt_tokens=seq.prompt_len if sent == 0 else 0)
                sent = n
                last_sent = seq.token_times[n - 1]
                yield chunk
                if finished:
                    return
        finally:
            self._streams.pop(seq.request_id, None)
            if not seq.done:
                self.core.abort(seq)
                self._arm()

    async def abort(self, request_id: str) -> None:
        stream = self._streams.get(request_id)
        if stream is None:
            return
        self.core.abort(stream.seq)
        stream.event.set()
        self._arm()

    def stats(self) -> EngineStats:
        sched = self.core.scheduler
        running = sched.num_running
        return EngineStats(
            running=running, waiting=self.core.load - running, kv_cache_usage=sched.blocks.usage,
            preemptions=sched.num_preemptions,
            extra={"sim_time_s": self.core.now, "iterations": float(self.core.iterations),
                   "kv_cache_tokens": float(self.plan.kv_tokens)},
        )

    async def check_health(self) -> None:
        """The simulated clock must be running: started, and no step of the core has failed."""
        if self._loop is None:
            raise RuntimeError("the simulated engine is not running")
        if self._error is not None:
            raise RuntimeError(f"the simulated engine's clock stopped: {self._error!r}")

    async def shutdown(self) -> None:
        for rid in list(self._streams):
            await self.abort(rid)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._loop = None

    # --- fault experiments -------------------------------------------------------------------------
    def kill_rank(self, rank: int) -> str:
        """A TP or PP group cannot run without one of its ranks: the engine stops, every request in flight ends
        with an error, new ones are refused and the health check fails until Serve replaces the replica."""
        self._check_rank(rank)
        in_flight = len(self._streams)
        self._fail(RuntimeError(f"GPU rank {rank} failed"))
        return f"rank {rank} failed: the engine stopped with {in_flight} requests in flight"

    def slow_rank(self, rank: int, factor: float) -> str:
        """The performance model with that rank slowed (PerfModel.slowed); steps already started keep their time."""
        self._check_rank(rank)
        if factor >= 1:
            self._slow.pop(rank, None)
        else:
            self._slow[rank] = factor
        model = self._perf
        for r, f in self._slow.items():
            model = model.slowed(r, f)
        self.core.cost_model = model
        return (f"rank {rank} at {factor:g}× speed" if factor < 1 else f"rank {rank} back to full speed") + (
            f" (stage speeds {', '.join(f'{v:g}' for v in model.stage_speed)})" if model.stage_speed else "")

    def _check_rank(self, rank: int) -> None:
        n = self._perf.tp * self._perf.pp
        if not 0 <= rank < n:
            raise ValueError(f"rank {rank}: this replica has ranks 0 to {n - 1}")

    def _fail(self, error: BaseException) -> None:
        """Stop the clock and wake every stream, so none waits on a dead engine."""
        self._error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in self._streams.values():
            stream.event.set()

    # --- the clock -------------------------------------------------------------------------------
    def _arm(self) -> None:
        """(Re)set the one timer to the wall time of the next simulated event."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is None or self._error is not None:
            return
        t_next = self.core.next_event_time()
        if t_next != math.inf:
            self._timer = self._loop.call_later(self.wall_time(t_next) - time.monotonic(), self._tick)

    def _tick(self) -> None:
        """Timer callback: run the core up to now, wake the streams that got tokens, re-arm."""
        self._timer = None
        try:
            for mb in self.core.run_until(self.sim_time()):
                for group in (mb.batch.decodes, mb.batch.prefills):
                    for seq in group:
                        stream = self._streams.get(seq.request_id)
                        if stream is not None:
                            stream.event.set()
        except Exception as e:   # wake every stream so no client waits forever on a dead clock
            self._fail(e)
            raise
        self._arm()
