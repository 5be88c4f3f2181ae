"""Requests/s and added TTFT through 1 and 2 ingress replicas.

For each ingress replica count, deploys a two-configuration scenario (simulated TP8 and PP8 engines on a
fast clock, `--time-scale`, so that the engines are not the bottleneck) on a fresh local Ray and runs a
closed loop of `--users` users with the load generator against the ingress replicas' own addresses
(direct ingress: the users' requests take them in turn), then through Serve's proxy. Prints completed
requests/s and the added TTFT (client TTFT - the server's own, in wall ms) p50 / p99, and the load average.

    .venv/bin/python -m bench.ingress_scale [--replicas 1 2] [--users 32] [--duration 15] [--tokens 16]

On a machine with fewer cores than processes (client, proxy, ingress replicas, engine replicas) a second
ingress replica adds a process competing for the same cores: compare within one run.
"""

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

import numpy as np

from deployments.deploy import deployed_locally
from deployments.resolve import Resolved, parse_scenario
from loadgen.records import read_records
from loadgen.runner import run_load
from schema.traffic import SLO, ClosedLoop, FixedLength, LoadConfig, TrafficClass


def scenario(replicas: int, time_scale: float) -> Resolved:
    return parse_scenario({
        "name": "ingress-scale", "model": "llama-3.1-70b", "dtype": "fp8",
        "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 2},
        "engine": {"kind": "sim", "time_scale": time_scale, "max_model_len": 4096},
        "configurations": [{"name": "tp8", "tp": 8}, {"name": "pp8", "pp": 8}],
        "server": {"ingress_replicas": replicas, "max_ongoing_requests": 4096},
        "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 10000},
                     "input": {"kind": "fixed", "value": 16}, "output": {"kind": "fixed", "value": 16}}],
    })


def run(target: str, users: int, duration: float, tokens: int, scale: float, out: Path) -> tuple[float, np.ndarray]:
    cls = TrafficClass(name="chat", share=1.0, slo=SLO(ttft_ms=10000), input=FixedLength(value=16),
                       output=FixedLength(value=tokens))
    load = LoadConfig(arrival=ClosedLoop(concurrency=users), duration_s=duration, warmup_s=2.0, timeout_s=60)
    asyncio.run(run_load(target, [cls], load, out))
    ok = [r for r in read_records(out) if r.status == "ok" and not r.warmup]
    added = np.array([(r.ttft_s - r.server_ttft_s * scale) * 1e3 for r in ok
                      if r.ttft_s is not None and r.server_ttft_s is not None])
    return len(ok) / duration, added


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--time-scale", type=float, default=0.05)
    a = ap.parse_args()
    for n in a.replicas:
        with deployed_locally(scenario(n, a.time_scale)) as dep, tempfile.TemporaryDirectory() as out:
            for path, target in (("direct", dep.target), ("proxy", dep.url)):
                load0 = os.getloadavg()[0]
                rps, added = run(target, a.users, a.duration, a.tokens, a.time_scale, Path(out) / path)
                print(f"{n} ingress replica(s), {path:6}: {rps:7.1f} req/s  added TTFT p50 "
                      f"{np.percentile(added, 50):6.2f} p99 {np.percentile(added, 99):7.2f} ms  "
                      f"({a.users} users, {a.tokens} tokens; load avg {load0:.1f} → {os.getloadavg()[0]:.1f} on "
                      f"{os.cpu_count()} CPUs)", flush=True)


if __name__ == "__main__":
    main()
