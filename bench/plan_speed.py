"""How fast `parallax plan` answers (issue 24, target ≤ 20 s each): three one-node questions and a multi-class one.

    .venv/bin/python -m bench.plan_speed [--workers N] [--only q1,q2,q3,classes] [--exhaustive]

Q1–Q3: Llama-3.1-70B FP8 on one 8-GPU node, one class each (scenarios/plan-70b-h200.yaml, plan-70b-h200-1k1k.yaml,
plan-70b-h100-2k200.yaml); `classes`: an 8-GPU MI325X node, the demo's chat and summarize classes plus a batch
class, split per class pools. Prints, per question, the candidates (screened out by the steady-state estimate /
simulated), the pool capacities and simulations the staged search ran, wall and CPU seconds (this process and
its workers), candidates per second, the winner, and the load average before and after: on a shared machine
the wall time depends on it, the CPU time much less. `--exhaustive` simulates every candidate (the search
without the screen) for comparison.
"""

import argparse
import os
import resource
import time
from pathlib import Path

import psutil

from controllers.plan.parallel import runner
from controllers.plan.search import PlanOptions, search
from deployments.resolve import Resolved, load_scenario, parse_scenario

SCENARIO = {
    "name": "plan-speed", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 1},
    "classes": [
        {"name": "chat", "share": 0.5, "slo": {"ttft_ms": 450, "tpot_ms": 40, "attainment": 0.9},
         "input": {"kind": "lognormal", "mean": 106, "sigma": 0.5, "max": 1024},
         "output": {"kind": "lognormal", "mean": 64, "sigma": 0.4, "max": 256}},
        {"name": "summarize", "share": 0.3, "slo": {"ttft_ms": 2000, "tpot_ms": 200, "attainment": 0.9},
         "input": {"kind": "normal", "mean": 4096, "std": 512, "min": 1024, "max": 8192},
         "output": {"kind": "fixed", "value": 208}},
        {"name": "batch", "share": 0.2, "slo": {"e2e_ms": 60000, "attainment": 0.9},
         "input": {"kind": "lognormal", "mean": 1500, "sigma": 0.6, "max": 8000},
         "output": {"kind": "lognormal", "mean": 400, "sigma": 0.5, "max": 2000}},
    ],
    "load": {"arrival": {"kind": "poisson", "rate": 5}, "rates": [5, 10, 20], "duration_s": 60},
}


def cpu_seconds() -> float:
    """CPU seconds of this process and its worker processes, those still running (a pool's) included."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        live += t.user + t.system
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + live


QUESTIONS = {"q1": "plan-70b-h200.yaml", "q2": "plan-70b-h200-1k1k.yaml", "q3": "plan-70b-h100-2k200.yaml"}
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def question(name: str) -> Resolved:
    if name == "classes":
        return parse_scenario(SCENARIO, "bench/plan_speed.py", need_configurations=False)
    return load_scenario(SCENARIOS / QUESTIONS[name], need_configurations=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    ap.add_argument("--only", default="q1,q2,q3,classes", help="questions to time, comma-separated")
    ap.add_argument("--exhaustive", action="store_true", help="simulate every candidate (no screen)")
    a = ap.parse_args()
    with runner(a.workers) as pool:
        for name in a.only.split(","):
            resolved = question(name)
            classes = len(resolved.scenario.classes)
            load0 = os.getloadavg()
            t0, c0 = time.perf_counter(), cpu_seconds()
            plan = search(resolved, PlanOptions(exhaustive=a.exhaustive), pool)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            load1 = os.getloadavg()
            split = sum(1 for e in [*plan.screened, *plan.screened_out] if not e.candidate.homogeneous)
            best = plan.ranked[0]
            print(f"{name} ({resolved.scenario.name}): {plan.candidates:,} candidates ({plan.candidates - split} "
                  f"homogeneous, {split} split per class), {len(plan.screened_out)} screened out, "
                  f"{len(plan.screened)} simulated, on {plan.where}")
            print(f"  {plan.pool_evaluations} pool capacities, {plan.simulations:,} simulations; wall {wall:.1f} s, "
                  f"cpu {cpu:.1f} s; {plan.candidates / wall:,.1f} candidates/s")
            print(f"  load average before {load0[0]:.2f} / {load0[1]:.2f}, after {load1[0]:.2f} / {load1[1]:.2f} "
                  f"(1 / 5 min; {os.cpu_count()} cores)")
            print(f"  best: {best.candidate.label(classes)}: {best.max_rate:.2f} ± {best.max_rate_std:.2f} req/s, "
                  f"{best.output_tokens_per_s_per_gpu:,.0f} output tokens/s per GPU", flush=True)


if __name__ == "__main__":
    main()
