"""How fast `parallax plan` searches: every deployment of 8 GPUs for 3 SLA classes (target < 60 s).

    .venv/bin/python -m bench.plan_speed [--workers N] [--gpus 8] [--homogeneous-only]

Llama-3.1-70B FP8 on an 8-GPU MI325X node, the demo's chat and summarize classes plus a batch class.
Prints the candidates (homogeneous and split per class), the pool capacities and simulations the staged
search ran, wall and CPU seconds (this process and its workers), candidates per second, and the load
average before and after: on a shared machine the wall time depends on it, the CPU time much less.
"""

import argparse
import os
import resource
import time

import psutil

from controllers.plan.parallel import runner
from controllers.plan.search import PlanOptions, search
from deployments.resolve import parse_scenario

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--homogeneous-only", action="store_true")
    a = ap.parse_args()
    hw = {**SCENARIO["hardware"], "gpus_per_node": max(8, a.gpus), "nodes": 1}  # type: ignore[dict-item]
    resolved = parse_scenario({**SCENARIO, "hardware": hw}, "bench/plan_speed.py", need_configurations=False)
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), cpu_seconds()
    with runner(a.workers) as pool:
        plan = search(resolved, PlanOptions(gpus=a.gpus, heterogeneous=not a.homogeneous_only), pool)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    load1 = os.getloadavg()
    split = sum(1 for e in plan.screened if not e.candidate.homogeneous)
    print(f"{plan.candidates:,} candidates ({plan.candidates - split} homogeneous, {split} split per class) of "
          f"{a.gpus} GPUs, 3 classes, on {plan.where}")
    print(f"  {plan.pool_evaluations} pool capacities, {plan.simulations:,} simulations; wall {wall:.1f} s, "
          f"cpu {cpu:.1f} s; {plan.candidates / wall:,.1f} candidates/s")
    print(f"  load average before {load0[0]:.2f} / {load0[1]:.2f}, after {load1[0]:.2f} / {load1[1]:.2f} "
          f"(1 / 5 min; {os.cpu_count()} cores)")
    best = plan.ranked[0]
    print(f"  best: {best.candidate.label(3)}: {best.max_rate:.2f} ± {best.max_rate_std:.2f} req/s, "
          f"{best.output_tokens_per_s_per_gpu:,.0f} output tokens/s per GPU")


if __name__ == "__main__":
    main()
