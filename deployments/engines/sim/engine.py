"""`SimEngine`: the simulated engine in real time, behind the Engine protocol of an LLMServer replica.

The scheduler and event core are the offline ones; here the simulated clock follows the wall clock,
`EngineConfig.time_scale` wall seconds per simulated second. A background task sleeps until the
wall time of the next simulated event, runs the core up to "now" and wakes the streams whose
sequences produced tokens, so every token is delivered when the simulated clock reaches it.
"""

import asyncio
import contextlib
import math
import time
import zlib
from collections.abc import AsyncIterator

from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec
from deployments.config import DeploymentSpec, ParallelConfig
from deployments.engines.base import EngineStats, GenerationRequest, TokenChunk
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.sequence import Sequence, Status
from deployments.placement import inter_node_hops

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
        factory = ReplicaFactory(model, gpu, spec.dtype, spec.resolved_kv_dtype, parallel.tp, parallel.pp,
                                 spec.engine, inter_node_hops=inter_node_hops(parallel, spec.hardware.gpus_per_node))
        self.core = factory()
        self.plan = factory.plan
        self.seed = spec.engine.seed
        self.time_scale = spec.engine.time_scale
        self._stream_interval = spec.engine.stream_interval_ms / 1e3 / self.time_scale   # simulated seconds
        self._streams: dict[str, _Stream] = {}
        self._t0 = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
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
        if self._task is not None:
            return
        self._t0 = time.monotonic()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="sim-engine-clock")

    def count_prompt_tokens(self, prompt: str) -> int:
        return count_prompt_tokens(prompt)

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Queue the request now (ValueError if it cannot fit); the iterator streams its tokens as the
        simulated clock reaches them.
        """
        if self._task is None or self._wake is None:
            raise RuntimeError("SimEngine.start() was not awaited")
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
        assert self._wake is not None
        self.core.submit(seq, self.sim_time() if arrival is None else arrival)
        stream = _Stream(seq)
        self._streams[seq.request_id] = stream
        self._wake.set()
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
                if self._wake is not None:
                    self._wake.set()

    async def abort(self, request_id: str) -> None:
        stream = self._streams.get(request_id)
        if stream is None:
            return
        self.core.abort(stream.seq)
        stream.event.set()
        if self._wake is not None:
            self._wake.set()

    def stats(self) -> EngineStats:
        sched = self.core.scheduler
        running = sched.num_running
        return EngineStats(
            running=running, waiting=self.core.load - running, kv_cache_usage=sched.blocks.usage,
            preemptions=sched.num_preemptions,
            extra={"sim_time_s": self.core.now, "iterations": float(self.core.iterations),
                   "kv_cache_tokens": float(self.plan.kv_tokens)},
        )

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for rid in list(self._streams):
            await self.abort(rid)

    # --- the clock -------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        loop = asyncio.get_running_loop()
        core = self.core
        try:
            while True:
                for mb in core.run_until(self.sim_time()):
                    for group in (mb.batch.decodes, mb.batch.prefills):
                        for seq in group:
                            stream = self._streams.get(seq.request_id)
                            if stream is not None:
                                stream.event.set()
                wake.clear()
                t_next = core.next_event_time()
                if t_next == math.inf:
                    await wake.wait()
                    continue
                delay = self.wall_time(t_next) - time.monotonic()
                if delay > 0:
                    timer = loop.call_later(delay, wake.set)
                    await wake.wait()
                    timer.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as e:   # wake every stream so no client waits forever on a dead clock
            self._error = e
            for stream in self._streams.values():
                stream.event.set()
            raise
