"""Re-plan for the live controller (issue 23): the best deployment for the traffic now, within a time budget.

The same candidates, estimate and simulation as `parallax plan` (max-rate objective, one seed, the screening
fidelity), ordered for an answer in seconds:
1. the running deployment (`current`) first: its pools' capacities, and its goodput at the traffic's rate;
2. every other candidate by its steady-state estimate (controllers/plan/estimate.py), best first, those the
   screen drops never simulated; a pool's capacity, once simulated, serves every candidate that holds it;
3. it stops when the next candidate's estimate, at the top of its error bar, cannot beat the best simulated
   rate (the answer is then the search's own), or when the time budget would be overrun (`why` says so);
4. the best deployment's goodput at the traffic's rate.
Correction factors (measured ÷ predicted TTFT and TPOT per shape) multiply the predicted latencies of their
shape in the estimate and in every simulated run (`Setup.corrected`).
"""

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from controllers.plan.candidates import Budget, Candidate, Knobs, Pool, candidates, shapes
from controllers.plan.estimate import Estimate
from controllers.plan.evaluate import SCREEN, Capacity, PlanError, Setup, requests_for, run_at
from controllers.plan.parallel import Runner
from controllers.plan.search import (
    Evaluated,
    PoolKey,
    PoolsTask,
    budget_of,
    estimate_deployment,
    pool_capacities,
    pool_estimates,
    screen,
)
from deployments.resolve import Resolved

FIDELITY = SCREEN


@dataclass(frozen=True)
class Replan:
    best: tuple[Pool, ...]          # the planner's best deployment for the traffic
    best_goodput: float             # predicted goodput (req/s meeting SLOs) of `best` at the traffic's rate
    current_goodput: float          # the same figure for `current` (the running deployment) at that rate
    rate: float                     # the offered rate planned for (wall clock, req/s)
    elapsed_s: float
    evaluated: int                  # deployments considered
    why: str                        # one line


@dataclass(frozen=True)
class GoodputTask:
    setup: Setup
    pool: Pool
    knobs: Knobs
    rate: float                     # into the pool, engine clock
    horizon_s: float                # simulated seconds a run should span (from the pool's capacity search)
    seed: int


def pool_goodput(task: GoodputTask) -> float:
    """Requests/s into the pool that meet their class's SLO at `rate` (engine clock)."""
    if task.rate <= 0:
        return 0.0
    fid = FIDELITY
    n = requests_for(task.rate, task.horizon_s, fid, task.setup.to_judge(task.pool.classes, fid.misses))
    return run_at(task.setup, task.pool, task.knobs, task.rate, n, task.seed, fid.warmup).goodput


def _serving(current: Sequence[Pool], names: Sequence[str]) -> tuple[Pool, ...]:
    """The running pools with only the classes the traffic has (a pool left with none serves nothing)."""
    out = []
    for p in current:
        mine = tuple(n for n in names if n in p.classes)
        if mine:
            out.append(Pool(p.shape, p.replicas, mine))
    return tuple(out)


def replan(resolved: Resolved, current: Sequence[Pool], factors: Mapping[tuple[int, int], tuple[float, float]],
           budget_s: float, runner: Runner, clock: Callable[[], float] = time.perf_counter) -> Replan:
    """The best deployment of the hardware's GPUs for `resolved`'s traffic (`Scenario.with_mix` applied), the
    running one evaluated first; PlanError when no deployment fits the hardware. The search never starts an
    evaluation that the longest so far says would end past `budget_s` (by `clock`, seconds)."""
    t0 = clock()
    s = resolved.scenario
    spread = any(c.spread_pp_over_nodes for c in s.configurations)
    setup = Setup.of(resolved, spread).corrected(factors)
    budget: Budget = budget_of(resolved, None)
    names = [c.name for c in s.classes]
    knobs = Knobs(s.resolved_kv_dtype, s.engine.max_num_seqs, s.engine.max_num_batched_tokens)
    wall_rate = float(setup.arrival.rate)
    rate = wall_rate * s.engine.clock_scale
    seed = s.engine.seed
    cands = candidates(shapes(resolved.model, resolved.gpu, s.dtype, s.engine, knobs, budget, spread), names, knobs,
                       budget, spread)
    if not cands:
        raise PlanError(f"{resolved.source}: no TP×PP split of {budget.gpus} GPUs holds the model")
    running = Candidate(_serving(current, names), knobs)
    served = {n for p in running.pools for n in p.classes}
    every = [Evaluated(c, [setup.share(p.classes) for p in c.pools], 0.0, []) for c in cands]
    now = next((e for e in every if e.candidate == running), None)
    if now is None and running.pools:
        now = Evaluated(running, [setup.share(p.classes) for p in running.pools], 0.0, [])
        every.insert(0, now)
    estimates = pool_estimates(setup, {PoolKey(p.shape, p.classes, knobs) for e in every for p in e.candidate.pools},
                               seed)
    for e in every:
        estimate_deployment(e, estimates)
    kept, _ = screen(every, "max-rate", 0.0)
    order = sorted(kept, key=lambda e: -e.estimated)
    if now is not None:
        order = [now, *(e for e in order if e is not now)]

    def whole(e: Evaluated) -> bool:
        return {n for p in e.candidate.pools for n in p.classes} == set(names)

    table: dict[tuple[PoolKey, int], Capacity] = {}
    best: Evaluated | None = None
    evaluated = 0
    longest = 0.0
    stop = ""
    for e in order:
        if best is not None and e is not now and e.upper < best.max_rate:
            stop = "every other candidate's estimate is below the best simulated rate"
            break
        spent = clock() - t0
        if evaluated and spent + longest > budget_s:
            stop = f"stopped at the {budget_s:g} s budget with {len(order) - evaluated} candidates left"
            break
        t1 = clock()
        _simulate(runner, setup, e, table, estimates, seed)
        longest = max(longest, clock() - t1)
        evaluated += 1
        if whole(e) and (best is None or (-e.max_rate, e.candidate.gpus) < (-best.max_rate,
                                                                                        best.candidate.gpus)):
            best = e
    if best is None:
        best = now or order[0]
    goodputs = _goodputs(runner, setup, [best] if now is None or best is now else [best, now], rate, seed)
    best_goodput = goodputs[0]
    current_goodput = 0.0 if now is None else goodputs[-1]
    if now is not None and served != set(names):
        missing = sorted(set(names) - served)
        stop = (stop + "; " if stop else "") + f"the running pools serve no {', '.join(missing)}"
    label = best.candidate.label(len(names))
    why = (f"{label}: {best.max_rate / s.engine.clock_scale:.2f} req/s max (wall clock) for {wall_rate:.2f} offered"
           + (f"; running {running.label(len(names))}: {now.max_rate / s.engine.clock_scale:.2f}" if now else "")
           + (f"; {stop}" if stop else "; every contender simulated"))
    return Replan(best.candidate.pools, best_goodput / s.engine.clock_scale, current_goodput / s.engine.clock_scale,
                  wall_rate, clock() - t0, evaluated, why)


def _simulate(runner: Runner, setup: Setup, e: Evaluated, table: dict[tuple[PoolKey, int], Capacity],
              estimates: Mapping[PoolKey, Estimate], seed: int) -> None:
    """`e`'s max_rate from its pools' simulated capacities (those not in `table` yet simulated, in parallel)."""
    c = e.candidate
    keys = [(PoolKey(p.shape, p.classes, c.knobs), p.replicas) for p in c.pools]
    missing = list(dict.fromkeys(k for k in keys if k not in table))
    tasks = [PoolsTask(setup, k, (r,), FIDELITY, seed, (_guess(estimates, k, r),)) for k, r in missing]
    for k, caps in zip(missing, runner.map(pool_capacities, tasks), strict=True):
        table[k] = caps[0]
    e.capacities = [table[k] for k in keys]
    e.max_rate = min(cap.rate / sh for cap, sh in zip(e.capacities, e.shares, strict=True))


def _guess(estimates: Mapping[PoolKey, Estimate], key: PoolKey, replicas: int) -> float:
    """Where the capacity search starts: the estimate (0, none, when it says nothing holds)."""
    rate = estimates[key].rate * replicas
    return rate if math.isfinite(rate) else 0.0


def _goodputs(runner: Runner, setup: Setup, deployments: Sequence[Evaluated], rate: float, seed: int) -> list[float]:
    """Each deployment's goodput (requests/s meeting SLOs, engine clock) with the traffic at `rate`."""
    tasks = [GoodputTask(setup, p, e.candidate.knobs, rate * sh, cap.horizon_s, seed)
             for e in deployments for p, sh, cap in zip(e.candidate.pools, e.shares, e.capacities, strict=True)]
    got = iter(runner.map(pool_goodput, tasks))
    return [sum(next(got) for _ in e.candidate.pools) for e in deployments]
