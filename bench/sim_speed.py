"""How fast the offline simulator runs: 10,000 requests of Llama-3.1-70B FP8 TP8 (target < 10 s each).

    .venv/bin/python -m bench.sim_speed [--gpu h100-sxm] [--num-requests 10000]

Prints, per workload, the wall and CPU time of the simulation (workload built, run, summarised; on a
shared machine CPU time is the steadier figure), the simulated duration and throughput, iterations
and generated tokens per CPU second.
"""

import argparse
import time

from deployments.catalog.gpus import resolve_gpu
from deployments.catalog.models import resolve_model
from deployments.engines.sim.offline import run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.stats import summarize
from deployments.engines.sim.workload import fixed_workload
from schema.dtypes import Dtype

# (label, input tokens, output tokens, requests/s or None for all queued at t=0)
WORKLOADS = (
    ("max-throughput 1024/256", 1024, 256, None),
    ("max-throughput 128/2048", 128, 2048, None),
    ("poisson 20/s 1024/256", 1024, 256, 20.0),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--num-requests", type=int, default=10_000)
    args = ap.parse_args()
    factory = ReplicaFactory(resolve_model("llama-3.1-70b"), resolve_gpu(args.gpu), Dtype.fp8, Dtype.bf16, 8, 1)
    print(f"llama-3.1-70b fp8 tp8 on {args.gpu}, {args.num_requests:,} requests, "
          f"KV cache {factory.plan.kv_tokens:,} tokens")
    for label, isl, osl, rate in WORKLOADS:
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_offline(factory, fixed_workload(args.num_requests, isl, osl, rate, seed=0))
        s = summarize(res)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        iters = sum(c.iterations for c in res.cores)
        tokens = args.num_requests * osl
        print(f"  {label:24s} wall {wall:6.2f} s, cpu {cpu:6.2f} s | simulated {s['duration_s']:8.1f} s, "
              f"{s['output_tokens_per_s']:8,.0f} tok/s, p50 TTFT {s['ttft_ms']['p50']:9.1f} ms | "
              f"{iters:,} iterations, {tokens / cpu / 1e6:.2f} M tokens per CPU second")


if __name__ == "__main__":
    main()
