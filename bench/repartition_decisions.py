"""What the repartition policy decides at each phase change of a shifting scenario, offline (no serving).

    .venv/bin/python -m bench.repartition_decisions [scenarios/shift.yaml] [--start-s 30] [--drain-s 30]

For each phase after the first, the split running is the previous phase's planner answer; the policy's re-plan
(controllers/repartitioner.REPLANNER) for the new phase's mix gives the best split and both goodputs, the
transition planner gives the steps and their cost (each new configuration starting in --start-s, each drain
bounded by --drain-s: the fleet's `engine.startup_s` is not on this branch), and the decision's valuation
(controllers/repartition.value_move) the predicted gain over the scenario's forecast horizon. Printed with the
horizon at which the move would just clear min_gain: a move needs a horizon longer than that.
"""

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from controllers.plan.candidates import Pool
from controllers.plan.parallel import runner
from controllers.repartition import value_move
from controllers.repartitioner import REPLANNER, hardware_nodes
from controllers.transition.planner import ServingSet, plan_transition
from deployments.resolve import Resolved, load_scenario
from schema.deployment import ParallelConfig


def serving(pools: Sequence[Pool], gpus_per_node: int) -> ServingSet:
    """The pools as live configurations named by shape, each class routed wholly to its pool."""
    configs = tuple(ParallelConfig(name=f"{p.shape.label.lower().replace('×', '')}-{i}", tp=p.shape.tp,
                                   pp=p.shape.pp, replicas=p.replicas,
                                   spread_pp_over_nodes=p.shape.gpus > gpus_per_node) for i, p in enumerate(pools))
    return ServingSet(configs, {c: {cfg.name: 1.0} for p, cfg in zip(pools, configs, strict=True) for c in p.classes})


def break_even(best: float, stay: float, duration_s: float, lost_gpu_s: float, budget: int, min_gain: float
               ) -> float:
    """The horizon from which the move clears min_gain (value_move's figures with the whole transition inside it)."""
    spare = best - stay * (1 + min_gain)
    cost = (best - stay) * duration_s + stay * lost_gpu_s / budget
    return max(duration_s, cost / spare) if spare > 0 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default="scenarios/shift.yaml", type=Path)
    ap.add_argument("--start-s", type=float, default=30.0, help="seconds until a new configuration serves")
    ap.add_argument("--drain-s", type=float, default=30.0, help="the drain bound")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    resolved = load_scenario(args.scenario, need_configurations=False)
    s = resolved.scenario
    cfg = s.controller.repartition
    names = s.load.phase_names
    nodes = hardware_nodes(resolved)
    budget = cfg.gpus or s.hardware.total_gpus
    print(f"{s.name}: {len(names)} phases; horizon {cfg.forecast.horizon_s:g} s, min_gain {cfg.min_gain:.0%}, "
          f"start {args.start_s:g} s, drain {args.drain_s:g} s; re-planner {getattr(REPLANNER, '__name__', 'replan')}")
    with runner(args.workers) as r:
        def at(i: int) -> Resolved:
            return Resolved(s.phase_mix(i), resolved.model, resolved.gpu, resolved.source)

        t0 = time.perf_counter()
        current = REPLANNER(at(0), (), {}, cfg.plan_budget_s, r).best
        print(f"phase {names[0]}: runs {' + '.join(p.label + ' ' + str(list(p.classes)) for p in current)} "
              f"({time.perf_counter() - t0:.0f} s to plan)")
        for i in range(1, len(names)):
            ph = s.load.phases[i]
            replan = REPLANNER(at(i), current, {}, cfg.plan_budget_s, r)
            t = plan_transition(serving(current, s.hardware.gpus_per_node), replan.best, nodes, lambda c: args.start_s,
                                drain_s=args.drain_s)
            v = value_move(replan, current, t.cost, budget, cfg.forecast.horizon_s)
            need = break_even(replan.best_goodput, replan.current_goodput, t.cost.duration_s, t.cost.lost_gpu_s,
                              budget, cfg.min_gain)
            print(f"phase {names[i]} (rate {ph.rate:g}/s, {ph.shares}): best "
                  f"{' + '.join(p.label + ' ' + str(list(p.classes)) for p in replan.best)}; goodput staying "
                  f"{replan.current_goodput:.2f}/s, moving {replan.best_goodput:.2f}/s; transition {len(t.steps)} "
                  f"steps, {t.cost.duration_s:.0f} s, {t.cost.lost_gpu_s:.0f} GPU-s lost, held {t.cost.held_s}; cost "
                  f"{v.cost:.0f} requests; predicted gain {v.gain:+.1%} over {cfg.forecast.horizon_s:g} s "
                  f"({'moves' if v.gain >= cfg.min_gain else 'stays'}); clears min_gain from a horizon of "
                  f"{need:.0f} s; re-plan {replan.elapsed_s:.0f} s ({replan.why})")
            current = replan.best


if __name__ == "__main__":
    main()
