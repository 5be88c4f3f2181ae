"""`parallax plan SCENARIO`: which split of the GPUs serves this traffic best, and (with --verify) proof live.

Its flags and the `--json` keys are a contract other tools rely on (see controllers/plan/result.py).
"""

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from controllers.cli.terminal import comma_ints, console, err_console, fail
from controllers.plan.availability import DEFAULT_RESTART_S, LLAMA3_GPU_FAILURE_RATE, Availability
from controllers.plan.evaluate import PlanError
from controllers.plan.parallel import runner
from controllers.plan.pareto import pareto_figure
from controllers.plan.proposal import proposal, write_scenario
from controllers.plan.result import NOISE_NOTE, entries, why, write_plan_json
from controllers.plan.search import OBJECTIVES, Objective, Plan, PlanOptions, search
from controllers.plan.verify import verify
from controllers.run import run_folder
from deployments.resolve import Resolved, load_scenario
from schema.dtypes import Dtype, parse_dtype
from schema.scenario import Scenario, ScenarioError


def _dtypes(text: str | None) -> tuple[Dtype, ...]:
    if not text:
        return ()
    try:
        return tuple(parse_dtype(v) for v in text.split(","))
    except ValueError as e:
        fail(f"--kv-dtypes: {e}")


def plan_cmd(
    scenario: Path = typer.Argument(..., help="scenario YAML (its configurations are optional)"),
    gpus: int = typer.Option(None, "--gpus", min=1, help="plan this many GPUs (default: the whole hardware)"),
    objective: str = typer.Option("max-rate", "--objective", help=" | ".join(OBJECTIVES)),
    top: int = typer.Option(5, "--top", min=1, help="deployments to show (and to write with --write-scenario)"),
    write_to: Path = typer.Option(None, "--write-scenario", help="write a scenario of the top K side by side"),
    verify_k: int = typer.Option(0, "--verify", min=0, help="run the top K live and compare with the plan"),
    workers: int = typer.Option(None, "--workers", min=1, help="worker processes (default: one per core; Ray "
                                "tasks instead when RAY_ADDRESS is set)"),
    as_json: bool = typer.Option(False, "--json", help="print the ranked list as JSON"),
    kv_dtypes: str = typer.Option(None, "--kv-dtypes", help="also search KV-cache dtypes, e.g. bf16,fp8"),
    max_num_seqs: str = typer.Option(None, "--max-num-seqs", help="also search max_num_seqs, e.g. 128,256"),
    max_num_batched_tokens: str = typer.Option(None, "--max-num-batched-tokens",
                                               help="also search max_num_batched_tokens, e.g. 4096,8192"),
    homogeneous_only: bool = typer.Option(False, "--homogeneous-only", help="no split of the classes over pools"),
    aggregated_only: bool = typer.Option(False, "--aggregated-only", help="no prefill/decode disaggregation"),
    spread_pp: bool = typer.Option(None, "--spread-pp/--no-spread-pp", help="let pipelines span nodes (default: "
                                   "as the scenario's configurations allow)"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="seeds of the front-runners' capacity estimate"),
    out: Path = typer.Option(Path("runs"), "--out", help="folder that receives plan-<scenario>-<time>/"),
    verify_duration: float = typer.Option(None, "--verify-duration", min=1.0,
                                          help="seconds per load step of the live run (default: the scenario's)"),
    gpu_failure_rate: float = typer.Option(
        LLAMA3_GPU_FAILURE_RATE, "--gpu-failure-rate", min=0.0,
        help="GPU failures per GPU-hour: rank by expected capacity, a replica down while it restarts (default "
             "1.54e-5, from Llama 3's 16k-H100 fleet; 0: no failures)"),
    restart_s: float = typer.Option(DEFAULT_RESTART_S, "--restart-s", min=0.0,
                                    help="seconds a replica stays down after one of its GPUs failed (detection and "
                                         "restart)"),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="simulate every candidate (default: those the "
                                    "steady-state estimate cannot rule out)"),
    phase: str = typer.Option(None, "--phase", help="plan this phase of load.phases (its name, or its number from "
                              "1): its classes' shares at its rate (default: the whole schedule's mix)"),
) -> None:
    """Search every TP×PP split of the GPU budget, homogeneous or per SLA class, aggregated or disaggregated (xP
    prefill + yD decode replicas), for the scenario's traffic."""
    if objective not in OBJECTIVES:
        fail(f"--objective {objective}: use one of {', '.join(OBJECTIVES)}")
    obj = cast(Objective, objective)
    opts = PlanOptions(gpus=gpus, objective=obj, top=top, kv_dtypes=_dtypes(kv_dtypes),
                       max_num_seqs=comma_ints("--max-num-seqs", max_num_seqs),
                       max_num_batched_tokens=comma_ints("--max-num-batched-tokens", max_num_batched_tokens),
                       heterogeneous=not homogeneous_only, disaggregated=not (aggregated_only or verify_k),
                       spread_pp=spread_pp, seeds=seeds, exhaustive=exhaustive,
                       availability=Availability(gpu_failure_rate, restart_s) if gpu_failure_rate > 0 else None)
    progress_to = err_console if as_json else console
    if verify_k and not aggregated_only:
        progress_to.print("[dim]--verify: aggregated candidates only (`parallax run` cannot serve a disaggregated "
                          "split yet)[/]", highlight=False)
    try:
        resolved = _traffic(load_scenario(scenario, need_configurations=False), phase, progress_to)
        t0 = time.perf_counter()
        with runner(workers) as run:
            plan = search(resolved, opts, run, progress=lambda m: progress_to.print(
                f"[dim]{time.perf_counter() - t0:6.1f}s[/] {m}", highlight=False))
    except (ScenarioError, PlanError) as e:
        fail(str(e))
    names = [c.name for c in resolved.scenario.classes]
    folder = run_folder(out, f"plan-{resolved.scenario.name}")
    write_plan_json(plan, folder / "plan.json", len(names))
    figure = pareto_figure(plan, names, folder / "pareto.png")
    if as_json:
        print(json.dumps(entries(plan, top), indent=1))
    else:
        _show(plan, resolved, top)
        console.print(f"plan: {folder / 'plan.json'}; figure: {figure}")
    if write_to is not None:
        write_scenario(proposal(resolved, plan, top, verify_duration), write_to)
        progress_to.print(f"scenario of the top {min(top, len(plan.ranked))}: {write_to} (deploy it with "
                          f"`parallax run {write_to}`)")
    if verify_k:
        _verify(resolved, plan, verify_k, out, verify_duration, progress_to)


def _traffic(resolved: Resolved, phase: str | None, con: Console) -> Resolved:
    """The traffic to plan for: phase `phase` of a schedule, else the whole schedule's mix, else the scenario's."""
    load = resolved.scenario.load
    if phase is None and not load.phases:
        return resolved
    if phase is None:
        mix = resolved.scenario.schedule_mix()
        con.print(f"[dim]load.phases: planning the whole schedule's mix ({_mix(mix)}); --phase K plans phase K's[/]",
                  highlight=False)
    else:
        try:
            index = load.phase_index(phase)
        except ValueError as e:
            fail(f"--phase {phase}: {e}")
        mix = resolved.scenario.phase_mix(index)
        con.print(f"[dim]phase {load.phase_names[index]}: {_mix(mix)}[/]", highlight=False)
    return replace(resolved, scenario=mix)


def _mix(s: Scenario) -> str:
    rate = getattr(s.load.arrival, "rate", 0.0)
    return (", ".join(f"{c.name} {c.share:.0%}" for c in s.classes) + f" at {rate:.3g} req/s "
            f"({rate * s.engine.clock_scale:.3g} on the engine clock)")


def _verify(resolved: Resolved, plan: Plan, k: int, out: Path, duration_s: float | None, con: Console) -> None:
    scenario = proposal(resolved, plan, k, duration_s)
    steps = len(scenario.load.rates)
    e = scenario.engine
    clock = f", time_scale {e.time_scale:g}, stream_interval_ms {e.stream_interval_ms:g}" if e.kind == "sim" else ""
    con.print(f"verifying the top {len(scenario.plan.deployments) if scenario.plan else 0} live on the "
              f"{e.kind} engine: {steps} load steps of {scenario.load.duration_s:g} s{clock} …", highlight=False)
    v = verify(resolved, scenario, out, con)
    if v.error:
        fail(f"the live run failed: {v.error}; what was recorded is in {v.folder}")
    c = v.comparison
    if c is None:
        fail(f"{v.folder}: the live run recorded nothing to compare")
    table = Table("predicted rank", "deployment", "predicted capacity (req/s)", "live steps met", "live capacity",
                  "live rank", title="plan vs live")
    for d in c.deployments:
        lo, hi = d.live_capacity
        table.add_row(str(d.planned.rank), escape(d.planned.label),
                      f"{d.planned.max_rate:.2f} ± {d.planned.max_rate_std:.2f}",
                      f"{d.passed}/{len(d.steps)}", f"{lo:.2f} – {'∞' if hi is None else f'{hi:.2f}'}",
                      str(d.live_rank))
    con.print(table)
    verdict = "agrees with the plan" if c.ranks_agree else "differs: " + ", ".join(
        f"#{a} ranked below #{b}" for a, b in c.inversions)
    sep, pairs = c.pairs_separated
    con.print(f"live ranking {verdict} ({sep} of {pairs} pairs told apart by the steps met); "
              f"{c.steps_agree}/{c.steps_measured} steps as predicted; "
              f"live run {v.seconds:.0f} s; report: {v.report}")


def _show(plan: Plan, resolved: Resolved, top: int) -> None:
    s = resolved.scenario
    names = [c.name for c in s.classes]
    failing = plan.ranked and plan.ranked[0].availability is not None
    table = Table("#", "deployment", "GPUs", "max rate (req/s)", *(["expected with failures"] if failing else []),
                  "goodput/GPU", "tok/s/GPU", *[f"{n} p90 TTFT/TPOT (ms)" for n in names], "limited by",
                  title=f"{s.name}: {plan.objective}, {plan.budget.gpus} GPUs of {resolved.gpu.name}, "
                        f"{plan.candidates:,} candidates")
    for i, e in enumerate(plan.ranked[:top], start=1):
        cells = []
        for n in names:
            cf = next((f.classes[n] for f in e.figures if n in f.classes), None)
            cells.append(f"{cf.ttft_ms['p90']:.0f} / {cf.tpot_ms['p90']:.0f}" if cf and cf.requests else "–")
        table.add_row(str(i), escape(e.candidate.label(len(names))), str(e.candidate.gpus),
                      f"{e.max_rate:.2f} ± {e.max_rate_std:.2f}",
                      *([f"{e.expected_rate:.3f} ({e.available_share:.3%})"] if failing else []),
                      f"{e.goodput_per_gpu:.3f}",
                      f"{e.output_tokens_per_s_per_gpu:,.0f}", *cells,
                      ", ".join(dict.fromkeys(c.binding for c in e.capacities)))
    console.print(table)
    for line in why(plan, len(names)):
        console.print(f"• {escape(line)}", highlight=False)
    console.print(f"[dim]{plan.candidates:,} candidates ({len(plan.screened_out):,} screened out by the steady-state "
                  f"estimate), {plan.pool_evaluations} pool capacities, "
                  f"{plan.simulations:,} simulations in {plan.seconds:.1f} s on {plan.where}. Rates are requests/s "
                  f"on the engine clock. {NOISE_NOTE}[/]", highlight=False)
    for note in plan.notes:
        console.print(f"[dim]{escape(note)}[/]", highlight=False)
