"""`parallax load` and `parallax summarize`: thin command-line layers over run_load and summarize."""

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import typer
from pydantic import TypeAdapter, ValidationError
from rich.table import Table

from controllers.cli.terminal import console, err_console, fail
from deployments.resolve import load_scenario
from loadgen.errors import LoadError
from loadgen.files import resolve_path
from loadgen.records import META_FILE, RECORDS_FILE, read_records
from loadgen.runner import run_load
from loadgen.sender import event_loop_factory
from loadgen.summary import LoadSummary, rescore, summarize
from schema.scenario import ScenarioError
from schema.traffic import SLO, Arrival, LoadConfig, TrafficClass


def _kv(spec: str, flag: str) -> dict[str, str]:
    out = {}
    for part in filter(None, spec.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise LoadError(f"{flag} {spec!r}: {part!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _length(value: str, flag: str) -> dict[str, Any]:
    lo, sep, hi = value.partition("-")
    try:
        return {"kind": "uniform", "min": int(lo), "max": int(hi)} if sep else {"kind": "fixed", "value": int(lo)}
    except ValueError:
        raise LoadError(f"{flag}: {value!r} is not a token count N or a range LO-HI") from None


def parse_class(spec: str) -> TrafficClass:
    """`NAME:share=0.6,in=100,out=50,ttft_ms=450,tpot_ms=40` (in/out: N or LO-HI)."""
    name, _, rest = spec.partition(":")
    kv = _kv(rest, f"--class {name}")
    slo: dict[str, Any] = {k: kv.pop(k) for k in ("ttft_ms", "tpot_ms", "e2e_ms", "attainment") if k in kv}
    data = {"name": name, "share": kv.pop("share", "1"), "slo": slo or {"ttft_ms": 1000, "tpot_ms": 100},
            "input": _length(kv.pop("in", "128"), f"--class {name} in"),
            "output": _length(kv.pop("out", "64"), f"--class {name} out")}
    if kv:
        raise LoadError(f"--class {name}: unknown key(s) {', '.join(kv)}; use share, in, out, ttft_ms, tpot_ms, "
                        "e2e_ms, attainment")
    try:
        return TrafficClass.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise LoadError(f"--class {name}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def parse_slo_override(spec: str, current: dict[str, SLO]) -> tuple[str, SLO]:
    """`CLASS:ttft_ms=300,tpot_ms=30`: replace those targets of the class's SLO."""
    name, _, rest = spec.partition(":")
    if name not in current:
        raise LoadError(f"--slo {spec!r}: no class {name!r} in the run; use one of {', '.join(current)}")
    kv = _kv(rest, "--slo")
    try:
        return name, SLO.model_validate(current[name].model_dump() | kv)
    except ValidationError as e:
        err = e.errors()[0]
        raise LoadError(f"--slo {name}: {'.'.join(map(str, err['loc'])) or 'slo'}: {err['msg']}") from None


def _arrival(kind: str, rate: float | None, burstiness: float, concurrency: int, trace: Path | None) -> Any:
    data: dict[str, Any] = {"kind": kind}
    if kind in ("poisson", "gamma", "constant") and rate is not None:
        data["rate"] = rate
    if kind == "gamma":
        data["burstiness"] = burstiness
    if kind == "closed":
        data["concurrency"] = concurrency
    if kind == "trace":
        if trace is None:
            raise LoadError("--arrival trace needs --trace FILE")
        data["path"] = trace
    if kind not in ("poisson", "gamma", "constant", "closed", "trace"):
        raise LoadError(f"--arrival {kind!r}: use poisson, gamma, constant, closed or trace "
                        "(ramps and steps: in a scenario file)")
    try:
        return TypeAdapter(Arrival).validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        flag = {"path": "--trace"}.get(str(err["loc"][-1]), f"--{err['loc'][-1]}")
        raise LoadError(f"--arrival {kind}: {flag}: {err['msg']}") from None


def summary_table(s: LoadSummary) -> Table:
    t = Table("phase" if s.phases else "step", "rate", "config", "class", "n", "ok", "err", "TTFT p50/p99 ms",
              "TPOT p50/p99 ms", "out tok/s", "req/s", "SLO met", "goodput")

    def pp(x: Any) -> str:
        return f"{x.p50 * 1000:.0f}/{x.p99 * 1000:.0f}" if x else "-"
    rows = [*s.groups, *s.phases] if len(s.step_durations_s) > 1 else [*s.overall, *s.phases]
    for g in rows:
        target = "" if g.meets_target is None else (" ✓" if g.meets_target else " ✗")
        t.add_row(g.phase or ("all" if g.rate_step is None else str(g.rate_step)),
                  f"{g.offered_rate:.3g}" if g.offered_rate else f"{g.concurrency} users" if g.concurrency else "-",
                  g.config, g.sla_class, str(g.count),
                  str(g.ok), str(g.errors + g.timeouts), pp(g.ttft_s), pp(g.tpot_s), f"{g.output_tokens_per_s:.1f}",
                  f"{g.request_throughput:.2f}", f"{g.slo_attainment:.0%}{target}", f"{g.goodput:.2f}")
    return t


def _print_summary(s: LoadSummary, records: list[Any]) -> None:
    if not console.is_terminal:  # logs and pipes: do not squeeze the table to 80 columns
        console.width = max(console.width, 160)
    console.print(summary_table(s))
    if s.engine_time_scale != 1.0:
        console.print(f"times, rates and SLOs on the simulated engine's clock: wall ÷ {s.engine_time_scale:g} "
                      "(the scenario's engine.time_scale), as `parallax run` reports them")
    if s.lateness_p50_s is not None and s.lateness_p99_s is not None:
        console.print(f"sent {s.sent}/{s.records} records; send lateness p50 {s.lateness_p50_s * 1000:.2f} ms, "
                      f"p99 {s.lateness_p99_s * 1000:.2f} ms")
    for w in s.workers:
        line = (f"worker {w.index} ({w.where}): {w.status}, {w.detail}; sent {w.sent} "
                f"(of {w.planned} open-loop planned), recorded {w.recorded}")
        (err_console.print(f"[bold red]{line}[/]", highlight=False) if w.status in ("died", "failed")
         else console.print(line, highlight=False))
    errors: dict[str, int] = {}
    for r in records:
        if r.error:
            errors[r.error.split(" — ")[0][:160]] = errors.get(r.error.split(" — ")[0][:160], 0) + 1
    for msg, n in sorted(errors.items(), key=lambda x: -x[1])[:5]:
        err_console.print(f"[yellow]{n} request(s):[/] {msg}", highlight=False)


def load_cmd(
    target: str = typer.Option(..., help="server base URL, e.g. http://127.0.0.1:8000; several, comma-separated "
                               "(e.g. the ingress replicas' addresses), are taken in turn"),
    scenario: Path | None = typer.Option(None, help="scenario YAML: its classes and load section"),
    class_: list[str] = typer.Option([], "--class", help="NAME:share=S,in=N|LO-HI,out=N|LO-HI,ttft_ms=,tpot_ms=,"
                                                          "e2e_ms= (repeat; instead of --scenario)"),
    model: str = typer.Option("auto", help="model name to ask for; 'auto' lets the Parallax ingress route"),
    arrival: str | None = typer.Option(None, help="poisson | gamma | constant | closed | trace"),
    rate: list[float] = typer.Option([], help="requests/s (or users for closed); repeat for a sweep"),
    burstiness: float = typer.Option(1.0, help="gamma arrivals: squared coefficient of variation"),
    concurrency: int = typer.Option(1, help="closed loop: number of users"),
    trace: Path | None = typer.Option(None, help="trace CSV/JSONL for --arrival trace"),
    duration: float | None = typer.Option(None, help="seconds per step"),
    warmup: float | None = typer.Option(None, help="warm-up seconds before the first step (not scored)"),
    timeout: float | None = typer.Option(None, help="per-request timeout, seconds"),
    seed: int | None = typer.Option(None),
    api: str = typer.Option("completions", help="completions | chat"),
    tokenizer: Path | None = typer.Option(None, help="tokenizer.json or model folder for exact prompt lengths"),
    api_key: str | None = typer.Option(None, envvar="OPENAI_API_KEY", help="bearer token"),
    metrics_port: int | None = typer.Option(None, help="serve client metrics on 127.0.0.1:PORT (0: any free)"),
    out: Path | None = typer.Option(None, help="run folder (default runs/load-<time>)"),
    progress: bool = typer.Option(True, help="live progress bar and table"),
    workers: int | None = typer.Option(None, help="worker processes sharing the schedule (default: the scenario's "
                                       "load.workers, else 1)"),
    ray_workers: bool = typer.Option(False, "--ray", help="run the workers as Ray actors spread over the nodes of "
                                     "the cluster in RAY_ADDRESS"),
) -> None:
    """Send SLA-tagged streaming traffic to an OpenAI-compatible server and record every request."""
    try:
        classes, load, base_dir, model_path, time_scale = _inputs(
            scenario, class_, arrival, rate, burstiness, concurrency, trace, duration, warmup, timeout, seed,
            workers, ray_workers)
        tokenizer = tokenizer or model_path  # a vllm scenario's own model folder gives exact prompt lengths
        if api not in ("completions", "chat"):
            raise LoadError(f"--api {api!r}: use completions or chat")
    except LoadError as e:
        fail(str(e))
    run_dir = out or Path("runs") / time.strftime("load-%Y%m%d-%H%M%S")

    async def main() -> LoadSummary:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        return await run_load(target, classes, load, run_dir, model=model, api=api,  # type: ignore[arg-type]
                              metrics_port=metrics_port, stop=stop, tokenizer=tokenizer, api_key=api_key,
                              base_dir=base_dir, progress=progress, time_scale=time_scale,
                              on_metrics_port=lambda p: console.print(f"client metrics on http://127.0.0.1:{p}/metrics"))

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as loop_runner:
            summary = loop_runner.run(main())
    except LoadError as e:
        written = run_dir / RECORDS_FILE
        fail(f"{e}\n(records so far are in {run_dir})" if written.is_file() and written.stat().st_size else str(e))
    records = read_records(run_dir)
    _print_summary(summary, records)
    console.print(f"records and summary in {run_dir}")
    if records and not any(r.status == "ok" for r in records):
        err_console.print("[bold red]error:[/] no request succeeded; see the errors above")
        raise typer.Exit(1)
    if summary.interrupted:
        err_console.print("interrupted: records and summary written")
        raise typer.Exit(130)
    if any(w.status in ("died", "failed") for w in summary.workers):
        err_console.print("[bold red]error:[/] a load generator worker died; the others finished and its records "
                          "are in, but it did not send all of its share")
        raise typer.Exit(1)


def _inputs(scenario: Path | None, class_: list[str], arrival: str | None, rate: list[float], burstiness: float,
            concurrency: int, trace: Path | None, duration: float | None, warmup: float | None,
            timeout: float | None, seed: int | None, workers: int | None = None, ray_workers: bool = False
            ) -> tuple[list[TrafficClass], LoadConfig, Path | None, Path | None, float]:
    """Classes, load, the scenario's folder, a real engine's model folder, and the engine's clock scale."""
    base_dir = model_path = None
    time_scale = 1.0
    if scenario is not None:
        if class_:
            raise LoadError("give either --scenario or --class, not both")
        try:
            r = load_scenario(scenario)
        except ScenarioError as e:
            raise LoadError(str(e)) from None
        classes, load, base_dir = list(r.scenario.classes), r.scenario.load, scenario.parent
        time_scale = r.scenario.engine.clock_scale
        if r.scenario.engine.kind == "vllm" and r.scenario.engine.model_path:
            model_path = resolve_path(Path(r.scenario.engine.model_path), base_dir)
    else:
        classes = [parse_class(c) for c in class_] or [parse_class("default:share=1")]
        total = sum(c.share for c in classes)
        if abs(total - 1) > 1e-6:
            raise LoadError(f"--class: shares sum to {total:g}, not 1; adjust share=")
        load = LoadConfig()
    if load.phases and (rate or duration is not None):
        raise LoadError(f"{'--rate' if rate else '--duration'}: the scenario's load is a schedule of phases, each "
                        "with its own rate and duration; remove the option (or edit load.phases)")
    update: dict[str, Any] = {}
    if arrival is not None or (scenario is None and len(rate) == 1):
        update["arrival"] = _arrival(arrival or "poisson", rate[0] if len(rate) == 1 else None, burstiness,
                                     concurrency, trace)
    if len(rate) > 1 or (len(rate) == 1 and scenario is not None and arrival is None):
        update["rates"] = rate
    for key, value in (("duration_s", duration), ("warmup_s", warmup), ("timeout_s", timeout), ("seed", seed),
                       ("workers", workers), ("workers_on", "ray" if ray_workers else None)):
        if value is not None:
            update[key] = value
    try:
        load = LoadConfig.model_validate(load.model_dump(exclude_unset=True) | update)
    except ValidationError as e:
        err = e.errors()[0]
        raise LoadError(f"load option {'.'.join(map(str, err['loc'])) or 'load'}: "
                        f"{err['msg'].removeprefix('Value error, ')}") from None
    return classes, load, base_dir, model_path, time_scale


def summarize_cmd(
    run_dir: Path = typer.Argument(..., help="run folder holding records.jsonl"),
    slo: list[str] = typer.Option([], help="CLASS:ttft_ms=300,tpot_ms=30 — re-score with other targets (repeat)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the summary as JSON here"),
) -> None:
    """Re-score saved records (optionally against other SLOs) and print the summary."""
    try:
        records = read_records(run_dir)
        meta = json.loads((run_dir / META_FILE).read_text()) if (run_dir / META_FILE).is_file() else {}
        slos = {c["name"]: SLO.model_validate(c["slo"]) for c in meta.get("classes", [])}
        for spec in slo:
            if not slos:
                raise LoadError(f"{run_dir}: no {META_FILE} with the classes' SLOs, so --slo cannot apply")
            name, new = parse_slo_override(spec, slos)
            slos[name] = new
        time_scale = float(meta.get("engine_time_scale", 1.0))
        records = rescore(records, slos, time_scale)
        durations = {int(k): v for k, v in meta.get("step_durations_s", {}).items()}
        summary = summarize(records, slos, durations, interrupted=bool(meta.get("interrupted")),
                            time_scale=time_scale)
    except LoadError as e:
        fail(str(e))
    _print_summary(summary, records)
    if json_out:
        json_out.write_text(summary.model_dump_json(indent=1))
