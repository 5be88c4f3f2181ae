"""LLMServer: one Serve deployment per parallel configuration, wrapping an engine behind one interface.

The ingress calls `generate` (streaming: a status dict, then ready-made SSE event strings) or
`complete` (one response dict) with a `Job` (loadgen/wire.py). The server checks the request against the
model's context, times every request, judges it against its SLA class's SLO and records the metrics of
telemetry.py. Responses and log lines name the client's request id; the engine gets it with a
per-replica sequence number, so a client that reuses an id still gets two engine requests.
"""

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from ray import serve

from deployments import openai_api as api
from deployments.app_args import AppArgs
from deployments.engines.base import Engine, GenerationRequest, TokenChunk
from deployments.engines.factory import create_engine
from deployments.fault_board import follow_orders
from deployments.resolve import Resolved
from deployments.startup import modelled_start_s
from deployments.telemetry import ReplicaMetrics, RequestTiming
from loadgen.wire import CLASS_HEADER, Job
from schema.deployment import ParallelConfig
from schema.faults import ENGINE_ACTIONS

logger = logging.getLogger("ray.serve")

STATS_PERIOD_S = 1.0
# The most a request's arrival is moved back to the ingress's receipt (bounds a skewed clock on another node).
MAX_HOP_S = 1.0


def received_at(arrival_wall: float, now_wall: float, now_monotonic: float) -> tuple[float, float]:
    """When the ingress received a request, as (wall, monotonic) in this process.

    Engines start their clock there, as vLLM starts its at the API server: the hop from the ingress to
    this replica is the testbed's (many replicas on a few CPU cores), not the simulated GPUs'. The hop
    counts as at most MAX_HOP_S, and never negative, so clock skew between nodes cannot move it far.
    """
    hop = min(max(now_wall - arrival_wall, 0.0), MAX_HOP_S)
    return now_wall - hop, now_monotonic - hop


@dataclass
class _Progress:
    """What one request has produced so far, and when (wall clock)."""

    started: float        # wall time the engine's clock starts from (the ingress's receipt)
    prompt_tokens: int = 0
    tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None
    finish_reason: str | None = None
    failed: bool = False


class LLMServer:
    """One replica of one configuration; its engine runs inside this actor's event loop."""

    async def __init__(self, args: dict[str, Any], config: dict[str, Any],  # type: ignore[misc]  # Serve awaits it
                       joins: bool = False):
        """`config`: the ParallelConfig as JSON (it may be one the scenario does not list: a transition's new
        shape); `joins`: the replica joins a running fleet, so a simulated engine first waits its modelled
        start (deployments/startup.py) on its clock, as a real engine's start would take."""
        self.resolved: Resolved = AppArgs.model_validate(args).resolve()
        s = self.resolved.scenario
        self.config = ParallelConfig.model_validate(config)
        config_name = self.config.name
        self.scale = s.engine.clock_scale
        self.stream_interval_ms = s.engine.stream_interval_ms
        self.context = s.engine.max_model_len or self.resolved.model.max_context
        self.slos = {c.name: c.slo for c in s.classes}
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.metrics = ReplicaMetrics(config_name, self.config.tp, self.config.pp, s.engine.kind)
        self.metrics.declare(self.slos)
        self.engine: Engine = create_engine(self.resolved, self.config)
        self._engine_ids = itertools.count()
        if joins and s.engine.kind == "sim":
            await asyncio.sleep(modelled_start_s(self.resolved, self.config) * self.scale)
        await self.engine.start()
        loop = asyncio.get_running_loop()
        self._stats_task = loop.create_task(self._export_stats())
        # a scenario's faults that reach into this configuration's engines: follow the run's fault board
        engine_faults = any(f.action in ENGINE_ACTIONS and f.target == config_name for f in s.faults)
        self._orders = loop.create_task(follow_orders(self.replica, self.engine)) if engine_faults else None

    async def _export_stats(self) -> None:
        while True:
            st = self.engine.stats()
            self.metrics.set_engine_stats(st.running, st.waiting, st.kv_cache_usage, st.preemptions)
            await asyncio.sleep(STATS_PERIOD_S)

    def _admit(self, job: Job) -> tuple[GenerationRequest, int, AsyncIterator[TokenChunk], _Progress]:
        """Hand a job to the engine, or raise the 400 the client gets (the engine may refuse it too)."""
        if job.sla_class not in self.slos:
            raise api.OpenAIError(400, f"unknown SLA class {job.sla_class!r}", param=CLASS_HEADER)
        n = self.engine.count_prompt_tokens(job.prompt)
        self.metrics.arrived(job.sla_class, n)
        if n < 1:
            raise api.OpenAIError(400, "the prompt is empty; send at least one token", param="prompt")
        err = api.context_error(n, job.max_tokens, self.context)
        if err is not None:
            raise err
        wall, monotonic = received_at(job.arrival_wall, time.time(), time.monotonic())
        req = GenerationRequest(request_id=f"{job.response_id}-{next(self._engine_ids)}", prompt=job.prompt,
                                max_tokens=job.max_tokens,
                                min_tokens=job.min_tokens, sla_class=job.sla_class, ignore_eos=job.ignore_eos,
                                temperature=job.temperature, arrival_time=monotonic)
        try:
            return req, n, self.engine.generate(req), _Progress(started=wall)
        except ValueError as e:
            raise api.OpenAIError(400, str(e), param="max_tokens", code="request_too_large") from None
        except RuntimeError as e:  # the engine is down (a failed GPU) until Serve replaces this replica
            raise api.OpenAIError(503, f"the engine cannot serve: {e}", "server_error",
                                  code="engine_unavailable") from None

    async def _run(self, req: GenerationRequest, prompt_tokens: int, stream: AsyncIterator[TokenChunk],
                   p: _Progress) -> AsyncGenerator[TokenChunk, None]:
        """The engine's stream, with timing and ITL kept in `p`; aborts the engine request if cut short."""
        p.prompt_tokens = prompt_tokens
        try:
            async for chunk in stream:
                now = time.time()
                if chunk.num_tokens:
                    if p.first_at is None:
                        p.first_at = now
                    elif p.last_at is not None:
                        self.metrics.observe_itl((now - p.last_at) / self.scale, chunk.num_tokens)
                    p.last_at = now
                    p.tokens += chunk.num_tokens
                if chunk.prompt_tokens:
                    p.prompt_tokens = chunk.prompt_tokens
                if chunk.finished:
                    p.finish_reason = chunk.finish_reason or "length"
                yield chunk
        finally:
            if p.finish_reason is None:
                await self.engine.abort(req.request_id)

    def _tpot(self, p: _Progress) -> float | None:
        """Engine-clock seconds per output token after the first."""
        if p.first_at is None or p.last_at is None or p.tokens < 2:
            return None
        return (p.last_at - p.first_at) / (p.tokens - 1) / self.scale

    def _record(self, job: Job, p: _Progress) -> None:
        """Metrics and one log line (naming the client's request id) per request that reached the engine."""
        if p.failed or p.finish_reason in (None, "abort") or p.first_at is None or p.last_at is None:
            status = "error" if p.failed else "aborted"
            self.metrics.failed(job.sla_class, status)
            logger.info("request %s (%s) %s after %d tokens", job.request_id, job.sla_class, status, p.tokens)
            return
        tpot = self._tpot(p)
        logger.info("request %s (%s) finished (%s): %d prompt + %d output tokens, TTFT %.1f ms (engine clock)",
                    job.request_id, job.sla_class, p.finish_reason, p.prompt_tokens, p.tokens,
                    (p.first_at - p.started) / self.scale * 1e3)

        def timing(start: float) -> RequestTiming:
            return RequestTiming(ttft_s=(p.first_at - start) / self.scale, tpot_s=tpot,  # type: ignore[operator]
                                 e2e_s=(p.last_at - start) / self.scale,  # type: ignore[operator]
                                 prompt_tokens=p.prompt_tokens, output_tokens=p.tokens)

        self.metrics.finished(job.sla_class, self.slos[job.sla_class], timing(p.started),
                              timing(job.arrival_wall), p.finish_reason)

    def _usage(self, p: _Progress) -> dict[str, Any]:
        ttft = None if p.first_at is None else (p.first_at - p.started) / self.scale
        return api.usage(p.prompt_tokens, p.tokens, self.stream_interval_ms, ttft, self._tpot(p))

    def _refused(self, job: Job, e: api.OpenAIError) -> dict[str, Any]:
        self.metrics.failed(job.sla_class, "error")
        logger.info("request %s (%s) refused: %s", job.request_id, job.sla_class, e.message)
        return self._reply(e.status, e.body())

    def _reply(self, status: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the ingress gets first (streaming) or whole: the HTTP status, the body, and this replica."""
        return {"status": status, "body": body, "replica": self.replica}

    async def generate(self, job: Job) -> AsyncIterator[dict[str, Any] | str]:
        """Streaming: first {"status": 200, "replica"} or an error dict, then SSE events, ending with [DONE]."""
        try:
            req, n, stream, p = self._admit(job)
        except api.OpenAIError as e:
            yield self._refused(job, e)
            return
        yield self._reply(200)
        created = int(job.arrival_wall)
        first = True
        try:
            async with aclosing(self._run(req, n, stream, p)) as chunks:  # closed (engine abort) if cut short
                async for chunk in chunks:
                    if chunk.num_tokens or chunk.finished:
                        yield api.stream_event(job.kind, job.response_id, job.model, created, chunk.text,
                                               p.finish_reason if chunk.finished else None, first=first)
                        first = False
            if job.include_usage:
                yield api.usage_event(job.kind, job.response_id, job.model, created, self._usage(p))
            yield api.SSE_DONE
        except Exception as e:  # an engine failure ends this stream only, never the replica
            logger.exception("request %s failed in the engine", job.request_id)
            p.failed = True
            yield api.sse(api.OpenAIError(500, f"engine error: {e}", "server_error").body())
            yield api.SSE_DONE
        finally:
            self._record(job, p)

    async def complete(self, job: Job) -> dict[str, Any]:
        """Non-streaming: {"status", "body", "replica"} with the whole response or an OpenAI error."""
        try:
            req, n, stream, p = self._admit(job)
        except api.OpenAIError as e:
            return self._refused(job, e)
        parts: list[str] = []
        try:
            async with aclosing(self._run(req, n, stream, p)) as chunks:
                async for chunk in chunks:
                    parts.append(chunk.text)
        except Exception as e:
            logger.exception("request %s failed in the engine", job.request_id)
            p.failed = True
            return self._reply(500, api.OpenAIError(500, f"engine error: {e}", "server_error").body())
        finally:
            self._record(job, p)
        return self._reply(200, api.response_body(job.kind, job.response_id, job.model, "".join(parts),
                                                  p.finish_reason, self._usage(p)))

    async def check_health(self) -> None:
        """Serve's health check: the stats loop must still be running, and the engine answer its own."""
        if self._stats_task.done():
            raise RuntimeError("the engine stats loop stopped")
        await self.engine.check_health()

    async def __del__(self) -> None:
        """Serve calls this (awaited) when the replica shuts down."""
        if hasattr(self, "_stats_task"):  # absent when __init__ failed
            self._stats_task.cancel()
            if self._orders is not None:
                self._orders.cancel()
            await self.engine.shutdown()
