"""How fast the live controller's re-plan answers (targets: ≤ 10 s for one 8-GPU node, ≤ 30 s for 16 GPUs on
two nodes): each phase of scenarios/shift.yaml.

    .venv/bin/python -m bench.replan_speed [--workers N] [--budget-s 10] [--nodes 2]

For each phase, the traffic of that phase (`Scenario.phase_mix`) re-planned from the scenario's running
deployment (its first configuration, all classes): the re-plan's wall and CPU seconds, deployments
considered, the best deployment, its goodput and the running one's at the phase's rate, and the load average
before and after (on a shared machine the wall time depends on it, the CPU time much less).
"""

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from bench.plan_speed import cpu_seconds
from controllers.plan.candidates import Pool, Shape
from controllers.plan.parallel import runner
from controllers.plan.replan import replan
from deployments.resolve import load_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "shift.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    ap.add_argument("--budget-s", type=float, default=10.0)
    ap.add_argument("--nodes", type=int, default=1, help="nodes of the scenario's hardware (2: 16 GPUs)")
    a = ap.parse_args()
    resolved = load_scenario(SCENARIO, need_configurations=False)
    s = resolved.scenario
    if a.nodes != s.hardware.nodes:
        s = s.model_copy(update={"hardware": s.hardware.model_copy(update={"nodes": a.nodes})})
        resolved = replace(resolved, scenario=s)
    first = s.configurations[0]
    names = tuple(c.name for c in s.classes)
    current = (Pool(Shape(first.tp, first.pp), first.replicas, names),)
    print(f"{SCENARIO.name}: re-plan of each phase of {s.hardware.nodes}×{s.hardware.gpus_per_node} GPUs from "
          f"{first.replicas}×TP{first.tp}×PP{first.pp} (budget {a.budget_s:g} s, {os.cpu_count()} cores)")
    with runner(a.workers) as pool:
        for i, name in enumerate(s.load.phase_names):
            mix = replace(resolved, scenario=s.phase_mix(i))
            load0 = os.getloadavg()
            t0, c0 = time.perf_counter(), cpu_seconds()
            r = replan(mix, current, {}, a.budget_s, pool)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            load1 = os.getloadavg()
            best = " + ".join(f"{p.replicas}×{p.shape.label} [{', '.join(p.classes)}]" for p in r.best)
            print(f"  {name}: wall {wall:.1f} s, cpu {cpu:.1f} s, {r.evaluated} deployments evaluated; best {best}: "
                  f"goodput {r.best_goodput:.2f} req/s vs running {r.current_goodput:.2f} at {r.rate:.2f} offered; "
                  f"load average {load0[0]:.2f} -> {load1[0]:.2f}")
            print(f"    {r.why}")


if __name__ == "__main__":
    main()
