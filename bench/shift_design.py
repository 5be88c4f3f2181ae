"""What a shifting load asks of the GPUs: each phase's planner answer, the best static deployment for the whole
schedule, and what that static deployment loses in each phase (the scenario's target: ≥ 20% in some phase).

    .venv/bin/python -m bench.shift_design [scenarios/shift.yaml] [--workers N] [--seeds 2] [--move-s 60]

Per phase of `load.phases`: `parallax plan --phase K`'s answer (the planner's public entry, `search`, on the
phase's classes and rate), its max rate, and the phase's offered rate. Then every deployment the planner
enumerates for the whole schedule's mix, and each phase's answer, is simulated in every phase at that phase's
rate and mix for the phase's length (at most --max-requests per pool, each phase from an empty engine): its
goodput there, requests/s meeting their class's SLO. The best static deployment is the one with the most good
requests summed over the phases; the per-phase oracle runs each phase's answer in its phase (moves free).
"Stay" is the previous phase's answer kept in this phase: what a move gains. A move that costs --move-s
seconds (a drain plus the new shape's start) loses at worst the phase's goodput for that long; it has paid off
`break-even` seconds into the phase, which must be well inside the phase for a live re-partition to win.
Rates, goodput and times are on the engine's clock (wall ÷ engine.time_scale).
"""

import argparse
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from controllers.plan.candidates import Candidate, Knobs, Pool
from controllers.plan.evaluate import REFINE, Setup, run_at
from controllers.plan.parallel import Runner, runner
from controllers.plan.search import PlanOptions, search
from deployments.resolve import Resolved, load_scenario

MIN_REQUESTS = 200   # per pool and phase: enough to judge a p90 target with room for warm-up


@dataclass(frozen=True)
class PoolRun:
    """One pool in one phase: the pool's classes that the phase sends, at their share of its rate."""

    setup: Setup
    pool: Pool
    knobs: Knobs
    rate: float
    requests: int
    seed: int


def pool_goodput(task: PoolRun) -> float:
    """Requests/s of the pool's classes that meet their SLO (the first few request lifetimes not judged)."""
    return run_at(task.setup, task.pool, task.knobs, task.rate, task.requests, task.seed, REFINE.warmup).goodput


@dataclass
class Phase:
    name: str
    duration_s: float          # engine clock
    rate: float                # requests/s, engine clock
    resolved: Resolved         # the phase's own traffic

    @property
    def setup(self) -> Setup:
        return Setup.of(self.resolved, any(c.spread_pp_over_nodes for c in self.resolved.scenario.configurations))


def goodputs(phases: list[Phase], deployments: list[Candidate], run: Runner, max_requests: int, seed: int
             ) -> dict[tuple[int, Candidate], float]:
    """Each deployment's goodput in each phase: its pools' goodputs summed (one simulation per distinct pool)."""
    keys: dict[tuple[int, Pool, Knobs], PoolRun] = {}
    for k, ph in enumerate(phases):
        setup = ph.setup
        present = {c.name for c in setup.classes}
        for d in deployments:
            for p in d.pools:
                mine = tuple(c for c in p.classes if c in present)
                if mine and (k, Pool(p.shape, p.replicas, mine), d.knobs) not in keys:
                    rate = ph.rate * setup.share(mine)
                    n = min(max_requests, max(MIN_REQUESTS, math.ceil(rate * ph.duration_s)))
                    keys[(k, Pool(p.shape, p.replicas, mine), d.knobs)] = PoolRun(
                        setup, Pool(p.shape, p.replicas, mine), d.knobs, rate, n, seed)
    results = dict(zip(keys, run.map(pool_goodput, list(keys.values())), strict=True))
    out = {}
    for k, ph in enumerate(phases):
        present = {c.name for c in ph.resolved.scenario.classes}
        for d in deployments:
            out[(k, d)] = sum(results.get((k, Pool(p.shape, p.replicas, tuple(c for c in p.classes if c in present)),
                                           d.knobs), 0.0) for p in d.pools)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", nargs="?", default=str(Path(__file__).parents[1] / "scenarios" / "shift.yaml"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=2, help="seeds of each plan's front-runners")
    ap.add_argument("--max-requests", type=int, default=3000, help="most requests simulated per pool and phase")
    ap.add_argument("--move-s", type=float, default=60.0, help="engine seconds a move costs its phase")
    args = ap.parse_args()
    t0 = time.perf_counter()
    resolved = load_scenario(args.scenario, need_configurations=False)
    s = resolved.scenario
    if not s.load.phases:
        raise SystemExit(f"{args.scenario}: load.phases: no phases to design; add a schedule")
    scale = s.engine.clock_scale
    phases = [Phase(name, p.duration_s / scale, p.rate * scale, replace(resolved, scenario=s.phase_mix(k)))
              for k, (name, p) in enumerate(zip(s.load.phase_names, s.load.phases, strict=True))]
    opts = PlanOptions(seeds=args.seeds)
    with runner(args.workers) as run:
        plans = []
        for ph in phases:
            plans.append(search(ph.resolved, opts, run))
            best = plans[-1].ranked[0]
            print(f"[{time.perf_counter() - t0:5.0f} s] phase {ph.name}: {best.candidate.label(len(s.classes))}, "
                  f"{best.max_rate:.2f} req/s", flush=True)
        whole = search(replace(resolved, scenario=s.schedule_mix()), opts, run)
        print(f"[{time.perf_counter() - t0:5.0f} s] planned the whole schedule's mix", flush=True)
        answers = [p.ranked[0].candidate for p in plans]
        deployments = list(dict.fromkeys([*answers, *(e.candidate for e in whole.screened)]))
        table = goodputs(phases, deployments, run, args.max_requests, s.engine.seed)
    n = len(s.classes)
    total = {d: sum(table[(k, d)] * ph.duration_s for k, ph in enumerate(phases)) for d in deployments}
    static = max(deployments, key=lambda d: total[d])
    print(f"\n{s.name}: {s.model} {s.dtype.value} on {resolved.gpu.name} × {whole.budget.gpus}; engine clock "
          f"(wall ÷ {scale:g}); {len(deployments)} deployments simulated in every phase, "
          f"{time.perf_counter() - t0:.0f} s on {run.where}")
    print(f"{'phase':10} {'length':>7} {'offered':>8}  {'planner answer':44} {'max rate':>9} {'load':>5}  "
          f"{'oracle':>7} {'static':>7} {'loss':>5}  {'stay':>7} {'break-even':>10}")
    for k, ph in enumerate(phases):
        best = plans[k].ranked[0]
        mix = ", ".join(f"{c.name} {c.share:.0%}" for c in ph.resolved.scenario.classes)
        oracle, kept = table[(k, answers[k])], table[(k, static)]
        stay = table[(k, answers[k - 1])] if k else None
        gain = oracle - stay if stay is not None else None
        even = (f"{args.move_s * oracle / gain:8.0f} s" if gain and gain > 0 else "   never" if stay is not None
                else "")
        print(f"{ph.name:10} {ph.duration_s:6.0f}s {ph.rate:7.2f}/s  "
              f"{best.candidate.label(len(ph.resolved.scenario.classes)):44} {best.max_rate:8.2f}/s "
              f"{ph.rate / best.max_rate:5.0%}  {oracle:7.2f} {kept:7.2f} {1 - kept / oracle:5.0%}  "
              f"{'' if stay is None else f'{stay:7.2f}'} {even:>10}   ({mix})")
    oracle_total = sum(table[(k, answers[k])] * ph.duration_s for k, ph in enumerate(phases))
    print(f"best static deployment for the whole schedule: {static.label(n)}: {total[static]:,.0f} good requests; "
          f"per-phase oracle {oracle_total:,.0f}: oracle ÷ static {oracle_total / total[static]:.2f}")
    mix_best = whole.ranked[0].candidate
    print(f"the planner on the whole schedule's mix picks {mix_best.label(n)}: {total[mix_best]:,.0f} good requests")


if __name__ == "__main__":
    main()
