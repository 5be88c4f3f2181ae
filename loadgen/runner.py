"""`run_load`: drive a target with the planned traffic and write records + summary to a run folder.

One process sends the plan itself (sender.py), or `load.workers` workers share it (fleet.py: local
processes, or Ray actors with `load.workers_on: ray`); either way the records, the summary and the
client /metrics are those of one run.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loadgen.client import Api, Clock, StreamingClient
from loadgen.control import LoadControl
from loadgen.errors import LoadError
from loadgen.exporter import ClientMetrics
from loadgen.fleet import run_fleet
from loadgen.plan import Workload, build_plan
from loadgen.progress import LiveView
from loadgen.prompts import PromptFactory, load_tokenizer
from loadgen.records import META_FILE, RECORDS_FILE, SUMMARY_FILE, RequestRecord
from loadgen.sender import RecordSink, Sender, drive, prompt_rng, raise_fd_limit
from loadgen.split import Share
from loadgen.summary import LoadSummary, WorkerReport, summarize
from schema.traffic import LoadConfig, TrafficClass


def check_url(target: str) -> None:
    """One base URL, or several separated by commas (requests take them in turn)."""
    for one in target.split(","):
        u = urlparse(one.strip())
        if u.scheme not in ("http", "https") or not u.netloc:
            raise LoadError(f"--target {one!r}: give the server's base URL, e.g. http://127.0.0.1:8000 "
                            "(several: comma-separated)")


async def run_load(target: str, classes: list[TrafficClass], load: LoadConfig, out_dir: str | Path, *,
                   model: str = "auto", api: Api = "completions", metrics_port: int | None = None,
                   stop: asyncio.Event | None = None, on_record: Callable[[RequestRecord], None] | None = None,
                   tokenizer: str | Path | None = None, api_key: str | None = None,
                   base_dir: Path | None = None, progress: bool = False,
                   on_metrics_port: Callable[[int], None] | None = None, time_scale: float = 1.0,
                   control: LoadControl | None = None) -> LoadSummary:
    """Run the load and return its summary; records, meta and summary land in `out_dir`. `control` learns
    when the schedule starts, and may kill a worker (a fault experiment).

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
            "steps": [{"index": s.index, "phase": s.phase, "offered_rate": s.offered_rate, "class_rates": s.class_rates,
                       "concurrency": sum(u.concurrency for u in s.closed) or None, "planned_s": s.duration_s,
                       "warmup_s": s.warmup_s} for s in plan],
        }
        (out / META_FILE).write_text(json.dumps(meta, indent=1))
        metrics = ClientMetrics(metrics_port) if metrics_port is not None else None
        if metrics and on_metrics_port:
            on_metrics_port(metrics.port)
        view = LiveView(sum(s.length_s for s in plan)) if progress else None
        reports: list[WorkerReport] = []
        try:
            with (out / RECORDS_FILE).open("w") as f, view or contextlib.nullcontext():
                sink = RecordSink(f, metrics, view, on_record, time_scale)
                if load.workers == 1 and load.workers_on == "local":
                    client.clock = clock = Clock()  # the schedule starts now, after the preflight
                    meta["started_at"] = clock.epoch0
                    if control is not None:
                        control.started(clock.epoch0)
                    sender = Sender(client, prompts, workload, slos, sink.add, prompt_rng(load.seed), time_scale)
                    interrupted = await drive(sender, sink.halt, plan, clock, durations, stop, metrics, view)
                else:
                    share = Share(target=target, model=model, api=api, timeout_s=load.timeout_s, api_key=api_key,
                                  classes=classes, base_dir=base_dir, slos=slos, seed=load.seed,
                                  tokenizer=str(tokenizer) if tokenizer else None, workers=load.workers,
                                  time_scale=time_scale)
                    fleet = await run_fleet(share, plan, load.workers_on, sink, durations, stop, metrics, view,
                                            control)
                    interrupted, reports = fleet.stopped, fleet.reports
                    meta["started_at"] = fleet.started_at or meta["started_at"]
        finally:
            if metrics:
                metrics.close()
    summary = summarize(sink.records, slos, durations, interrupted=interrupted, time_scale=time_scale)
    summary = summary.model_copy(update={"workers": reports})
    meta |= {"finished_at": time.time(), "step_durations_s": durations, "interrupted": interrupted,
             "workers": [w.model_dump() for w in reports]}
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    (out / SUMMARY_FILE).write_text(summary.model_dump_json(indent=1))
    if sink.fatal:
        raise LoadError(f"{target} refused the requests: {sink.fatal}")
    return summary


