"""`run_load`: drive a target with the planned traffic and write records + summary to a run folder.

Open-loop requests are sent on schedule whatever the server does: each is its own task, and the
dispatcher never waits for a response. Every request that was due produces exactly one record
(ok, error, timeout, or cancelled when the run is stopped).
"""

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from loadgen.client import Api, Clock, Planned, StreamingClient
from loadgen.config import LoadConfig, TrafficClass
from loadgen.errors import LoadError
from loadgen.exporter import ClientMetrics
from loadgen.plan import ClosedUsers, StepPlan, Workload, build_plan
from loadgen.progress import LiveView
from loadgen.prompts import PromptFactory, load_tokenizer
from loadgen.records import META_FILE, RECORDS_FILE, SUMMARY_FILE, RequestRecord, write_record
from loadgen.summary import LoadSummary, judge, summarize

# HTTP answers that will not get better by retrying: stop the run at the first one if nothing succeeded.
FATAL_STATUS = (401, 403, 404)


def raise_fd_limit() -> None:
    """Every request in flight holds a connection: allow as many open files as the system lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, 65536) if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def check_url(target: str) -> None:
    u = urlparse(target)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise LoadError(f"--target {target!r}: give the server's base URL, e.g. http://127.0.0.1:8000")


class _Run:
    """State of one run: the record sink, in-flight requests and the stop condition."""

    def __init__(self, client: StreamingClient, prompts: PromptFactory, workload: Workload, out: Any,
                 slos: dict, metrics: ClientMetrics | None, view: LiveView | None,
                 on_record: Callable[[RequestRecord], None] | None, seed: int, time_scale: float = 1.0):
        self.client, self.prompts, self.workload, self.out = client, prompts, workload, out
        self.time_scale = time_scale
        self.slos, self.metrics, self.view, self.on_record = slos, metrics, view, on_record
        self.rng = np.random.default_rng([seed, 1_000_003])
        self.records: list[RequestRecord] = []
        self.inflight: set[asyncio.Task[None]] = set()
        self.halt = asyncio.Event()
        self.fatal: str | None = None
        self.any_ok = False

    def sink(self, r: RequestRecord) -> None:
        r = judge(r, self.slos[r.sla_class], self.time_scale)
        self.records.append(r)
        write_record(self.out, r)
        self.out.flush()
        self.any_ok |= r.status == "ok"
        if r.http_status in FATAL_STATUS and not self.any_ok and self.fatal is None:
            self.fatal = r.error
            self.halt.set()
        if self.metrics:
            self.metrics.observe(r.on_engine_clock(self.time_scale))
        if self.view:
            self.view.add(r.on_engine_clock(self.time_scale))
        if self.on_record:
            self.on_record(r)

    def launch(self, p: Planned, scheduled_perf: float) -> asyncio.Task[None]:
        prompt = self.prompts.make(p.prompt_tokens, self.rng)
        task = asyncio.create_task(self.client.send(p, prompt, scheduled_perf, self.sink))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        return task

    async def open_loop(self, step: StepPlan, t0: float) -> None:
        for p in step.requests:
            delay = t0 + p.at_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.launch(p, t0 + p.at_s)

    async def closed_user(self, step: StepPlan, users: ClosedUsers, user: int, t0: float, run_t0: float) -> None:
        end = t0 + step.length_s
        n = 0
        rng = np.random.default_rng([user, step.index, 7])
        while (now := time.perf_counter()) < end:
            cls = self.workload.pick(users.stream, rng)
            n_in, n_out = self.workload.lengths(cls, rng)
            p = Planned(request_id=f"s{step.index}-u{user}-{n:06d}", at_s=now - run_t0, sla_class=cls,
                        prompt_tokens=n_in, max_tokens=n_out, rate_step=step.index, offered_rate=None,
                        concurrency=users.concurrency, warmup=now - t0 < step.warmup_s)
            await self.launch(p, now)
            n += 1

    async def step(self, step: StepPlan, t0: float, run_t0: float) -> None:
        jobs = [self.open_loop(step, t0)] if step.requests else []
        jobs += [self.closed_user(step, u, i, t0, run_t0) for u in step.closed for i in range(u.concurrency)]
        await asyncio.gather(*jobs)
        await asyncio.sleep(max(0.0, t0 + step.length_s - time.perf_counter()))


async def run_load(target: str, classes: list[TrafficClass], load: LoadConfig, out_dir: str | Path, *,
                   model: str = "auto", api: Api = "completions", metrics_port: int | None = None,
                   stop: asyncio.Event | None = None, on_record: Callable[[RequestRecord], None] | None = None,
                   tokenizer: str | Path | None = None, api_key: str | None = None,
                   base_dir: Path | None = None, progress: bool = False,
                   on_metrics_port: Callable[[int], None] | None = None, time_scale: float = 1.0) -> LoadSummary:
    """Run the load and return its summary; records, meta and summary land in `out_dir`.

    `time_scale`: wall seconds per second of the target engine's clock (a simulated engine's
    `EngineConfig.clock_scale`): SLOs are judged, and the summary and client metrics reported, on that clock.

    `stop` ends the run early (in-flight requests are cancelled and recorded as such). Raises
    LoadError for bad input, an unreachable target, or a target that answers 401/403/404 to
    every request so far (records and summary are written first).
    """
    workload = Workload(classes, base_dir)
    plan = build_plan(classes, load, workload, base_dir)
    prompts = PromptFactory(load_tokenizer(Path(tokenizer)) if tokenizer else None, seed=load.seed)
    check_url(target)
    raise_fd_limit()
    out = Path(out_dir)
    slos = {c.name: c.slo for c in classes}
    durations: dict[int, float] = {}
    async with StreamingClient(target, model=model, api=api, timeout_s=load.timeout_s, api_key=api_key,
                               count_tokens=prompts.count) as client:
        await client.check()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LoadError(f"{out}: cannot create the run folder ({e.strerror}); choose another --out") from None
        meta: dict[str, Any] = {
            "target": target, "model": model, "api": api, "classes": [c.model_dump(mode="json") for c in classes],
            "load": load.model_dump(mode="json"), "started_at": time.time(), "engine_time_scale": time_scale,
            "steps": [{"index": s.index, "offered_rate": s.offered_rate, "class_rates": s.class_rates,
                       "concurrency": sum(u.concurrency for u in s.closed) or None, "planned_s": s.duration_s,
                       "warmup_s": s.warmup_s} for s in plan],
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=1))
        metrics = ClientMetrics(metrics_port) if metrics_port is not None else None
        if metrics and on_metrics_port:
            on_metrics_port(metrics.port)
        view = LiveView(sum(s.length_s for s in plan)) if progress else None
        try:
            with (out / RECORDS_FILE).open("w") as f, view or contextlib.nullcontext():
                client.clock = clock = Clock()  # the schedule starts now, after the preflight
                run = _Run(client, prompts, workload, f, slos, metrics, view, on_record, load.seed, time_scale)
                interrupted = await _drive(run, plan, clock, durations, stop, metrics, view)
        finally:
            if metrics:
                metrics.close()
    summary = summarize(run.records, slos, durations, interrupted=interrupted, time_scale=time_scale)
    meta |= {"finished_at": time.time(), "step_durations_s": durations, "interrupted": interrupted}
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    (out / SUMMARY_FILE).write_text(summary.model_dump_json(indent=1))
    if run.fatal:
        raise LoadError(f"{target} refused the requests: {run.fatal}")
    return summary


async def _drive(run: _Run, plan: list[StepPlan], clock: Clock, durations: dict[int, float],
                 stop: asyncio.Event | None, metrics: ClientMetrics | None, view: LiveView | None) -> bool:
    """Run the steps, then drain in-flight requests; True when stopped early."""
    run_t0 = clock.perf0

    async def steps() -> None:
        t0 = run_t0
        for s in plan:
            if metrics:
                for cls, rate in s.class_rates.items():
                    metrics.set_offered_rate(cls, rate)
            if view:
                view.set_step(f"step {s.index + 1}/{len(plan)}"
                              + (f" @ {s.offered_rate:.3g} req/s" if s.offered_rate else ""))
            await run.step(s, t0, run_t0)
            durations[s.index] = s.duration_s
            t0 += s.length_s

    async def refresher() -> None:
        while view:
            view.refresh()
            await asyncio.sleep(0.25)

    waiters = [asyncio.create_task(run.halt.wait())] + ([asyncio.create_task(stop.wait())] if stop else [])
    refresh = asyncio.create_task(refresher())
    main = asyncio.create_task(steps())
    stopped = False
    try:
        done, _ = await asyncio.wait([main, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if main in done:
            main.result()
            while run.inflight and not any(w.done() for w in waiters):
                await asyncio.wait([*run.inflight, *waiters], return_when=asyncio.FIRST_COMPLETED)
        stopped = any(w.done() for w in waiters)
    finally:
        for t in [main, refresh, *waiters, *run.inflight]:
            t.cancel()
        await asyncio.gather(main, refresh, *waiters, *run.inflight, return_exceptions=True)
    if stopped:
        _record_partial_step(plan, durations, clock)
    return stopped


def _record_partial_step(plan: list[StepPlan], durations: dict[int, float], clock: Clock) -> None:
    """The measured length of the step a stopped run was in."""
    elapsed = time.perf_counter() - clock.perf0
    start = 0.0
    for s in plan:
        if s.index not in durations:
            durations[s.index] = max(0.0, min(s.duration_s, elapsed - start - s.warmup_s))
            return
        start += s.length_s
