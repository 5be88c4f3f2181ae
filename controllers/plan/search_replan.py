"""A re-plan over the full search (`search.search`): slow but the planner's own answer. It stands in for
`controllers/plan/replan.py: replan` (warm-started, bounded in time, corrected by the factors) until that lands;
both have the `Replanner` signature (controllers/repartition.py).

The best deployment is the search's first; both it and the running pools are then simulated at the traffic's
rate (each pool at its classes' share of it) and their goodputs compared. The search is not bounded by
`budget_s` and does not apply `factors`: `why` says so when either matters.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controllers.plan.candidates import Knobs, Pool
from controllers.plan.evaluate import SCREEN, Setup, requests_for, run_at
from controllers.plan.parallel import Runner
from controllers.plan.search import PlanOptions, engine_clock_rates, search
from deployments.resolve import Resolved

TRAFFIC_S = 60.0   # seconds of traffic (engine clock) each pool's goodput is simulated over, within SCREEN's bounds


@dataclass(frozen=True)
class SearchReplan:
    best: tuple[Pool, ...]
    best_goodput: float      # req/s meeting their SLO, wall clock
    current_goodput: float
    rate: float              # req/s, wall clock
    elapsed_s: float
    evaluated: int
    why: str


def goodput_at(setup: Setup, pools: Sequence[Pool], knobs: Knobs, rate: float, seed: int) -> float:
    """Requests/s meeting their SLO (engine clock) of `pools` offered `rate` req/s (engine clock) of the setup's
    mix, each class routed to its pool; a class no pool serves counts for nothing."""
    present = {c.name for c in setup.classes}
    total = 0.0
    for p in pools:
        mine = tuple(c for c in p.classes if c in present)
        if not mine:
            continue
        pool_rate = rate * setup.share(mine)
        n = requests_for(pool_rate, TRAFFIC_S, SCREEN, setup.to_judge(mine, SCREEN.misses))
        total += run_at(setup, Pool(p.shape, p.replicas, mine), knobs, pool_rate, n, seed, SCREEN.warmup).goodput
    return total


def search_replan(resolved: Resolved, current: Sequence[Pool], factors: Mapping[tuple[int, int], tuple[float, float]],
                  budget_s: float, runner: Runner) -> SearchReplan:
    """The search's best deployment for `resolved`'s traffic and its goodput against `current`'s."""
    t0 = time.perf_counter()
    s = resolved.scenario
    plan = search(resolved, PlanOptions(gpus=s.controller.repartition.gpus, top=1, seeds=1), runner)
    best = plan.ranked[0].candidate
    rate = engine_clock_rates(resolved)[0]
    seed = s.engine.seed
    best_g = goodput_at(plan.setup, best.pools, best.knobs, rate, seed)
    current_g = goodput_at(plan.setup, current, best.knobs, rate, seed)
    elapsed = time.perf_counter() - t0
    notes = [f"full search of {plan.candidates} deployments in {elapsed:.0f} s"]
    if elapsed > budget_s:
        notes.append(f"over the {budget_s:g} s budget (the full search is not bounded)")
    if any(f != (1.0, 1.0) for f in factors.values()):
        notes.append("correction factors not applied (the full search has no hook for them)")
    scale = s.engine.clock_scale
    return SearchReplan(best.pools, best_g / scale, current_g / scale, rate / scale, elapsed, plan.candidates,
                        "; ".join(notes))
