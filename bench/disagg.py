"""Disaggregated against aggregated splits of one node, by the simulator: the issue's three questions.

    .venv/bin/python -m bench.disagg [--top 4] [--question N]

For each question (Llama-3.1-70B FP8, one 8-GPU node, fixed ISL/OSL, TTFT and TPOT targets at p90 for 90 %
of requests): every aggregated split R×TPt of the node, and the disaggregated splits xP(TPa)+yD(TPb) of at most
8 GPUs whose roles fit, ranked by the fluid estimate (`disagg_steady_state.estimate(...).rate_within(TTFT)`)
with the top `--top` simulated. Each simulated candidate's max rate is the what-if's capacity search
(`controllers.whatif.capacity`: Poisson requests, 60-600 of them, judged from the first, so optimistic at high
rates, alike for both kinds); its output tokens/s per GPU at that rate; p90 TTFT and TPOT there; and, without
any SLO, the output tokens/s per GPU it sustains overloaded (`saturated`). Then the fluid estimate's error
against the simulated capacity of each disaggregated candidate, and the best of each kind.
"""

import argparse
import statistics
import time
from typing import Any

from controllers.whatif import capacity, predict
from deployments.engines.sim.configuration import configuration_replicas
from deployments.engines.sim.disagg import DisaggregatedReplicas
from deployments.engines.sim.disagg_steady_state import estimate
from deployments.engines.sim.steady_state import max_throughput
from deployments.engines.sim.workload import fixed_workload
from deployments.resolve import Resolved, parse_scenario
from schema.deployment import ParallelConfig

QUESTIONS = [  # (GPU, ISL, OSL, TTFT ms, TPOT ms)
    ("h200", 4000, 500, 1000, 50),
    ("h200", 1000, 1000, 300, 15),
    ("h100-sxm", 2000, 200, 500, 30),
]
GPUS = 8
TPS = (1, 2, 4, 8)
DURATION_S = 120.0


def scenario(gpu: str, isl: int, osl: int, ttft: int, tpot: int, configs: list[dict[str, Any]]) -> Resolved:
    return parse_scenario({
        "name": "disagg-bench", "model": "llama-3.1-70b", "dtype": "fp8", "kv_dtype": "fp8",
        "hardware": {"gpu": gpu, "gpus_per_node": GPUS, "nodes": max(1, len(configs))},
        "configurations": configs,
        "classes": [{"name": "q", "share": 1.0, "slo": {"ttft_ms": ttft, "tpot_ms": tpot, "attainment": 0.9},
                     "input": {"kind": "fixed", "value": isl}, "output": {"kind": "fixed", "value": osl}}],
    }, "bench/disagg.py")


def label(c: ParallelConfig) -> str:
    if c.disagg is None:
        return f"{c.replicas}×TP{c.tp}"
    p, d = c.disagg.prefill, c.disagg.decode
    return f"{p.replicas}P(TP{p.tp})+{d.replicas}D(TP{d.tp})"


def candidates(gpu: str, isl: int, osl: int, ttft: int, tpot: int, top: int) -> tuple[list[dict[str, Any]],
                                                                                       dict[str, float]]:
    """Every aggregated split of the node that fits, and the `top` disaggregated ones by the fluid estimate."""
    agg = [{"name": f"a{GPUS // t}x{t}", "tp": t, "replicas": GPUS // t} for t in TPS]
    disagg = [{"name": f"p{x}t{a}d{y}t{b}", "disagg": {"prefill": {"tp": a, "replicas": x},
                                                       "decode": {"tp": b, "replicas": y}}}
              for a in TPS for b in TPS for x in range(1, GPUS // a + 1) for y in range(1, (GPUS - x * a) // b + 1)]
    fits, fluid = [], {}
    for c in agg + disagg:
        try:
            r = scenario(gpu, isl, osl, ttft, tpot, [c])
        except ValueError:   # a role (or split) whose memory cannot hold the model or one request
            continue
        pc = r.scenario.configurations[0]
        if pc.disagg is not None:
            replicas = configuration_replicas(r.scenario, pc, r.model, r.gpu)
            assert isinstance(replicas, DisaggregatedReplicas)
            fluid[pc.name] = estimate(replicas, isl, osl, tpot / 1e3).rate_within(ttft / 1e3)
        fits.append(c)
    ranked = sorted((c for c in fits if "disagg" in c), key=lambda c: -fluid[c["name"]])
    return [c for c in fits if "disagg" not in c] + ranked[:top], fluid


def saturated(r: Resolved, c: ParallelConfig, isl: int, osl: int) -> float:
    """Output tokens/s per GPU it sustains without an SLO: Poisson arrivals at twice the fluid estimate of its
    saturation, eight times as many requests as its decoding slots (fewer leave the run one wave long and its
    finishes bunched), the middle half of the finishes (all within the busy period)."""
    n = 8 * r.scenario.engine.max_num_seqs * (c.disagg.decode.replicas if c.disagg else c.replicas)
    replicas = configuration_replicas(r.scenario, c, r.model, r.gpu)
    if isinstance(replicas, DisaggregatedReplicas):
        fluid = estimate(replicas, isl, osl).rate
    else:
        fluid = max_throughput(replicas.factory, isl, osl).output_tokens_per_s / osl * replicas.replicas
    finish = sorted(x.finish for x in replicas.run(fixed_workload(n, isl, osl, rate=2 * fluid, seed=1)).records)
    return (n // 2) * osl / (finish[3 * n // 4] - finish[n // 4]) / c.gpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=4, help="disaggregated candidates to simulate per question")
    ap.add_argument("--question", type=int, choices=range(1, len(QUESTIONS) + 1), help="only this one")
    a = ap.parse_args()
    for qi, (gpu, isl, osl, ttft, tpot) in enumerate(QUESTIONS, 1):
        if a.question and a.question != qi:
            continue
        t0 = time.perf_counter()
        configs, fluid = candidates(gpu, isl, osl, ttft, tpot, a.top)
        r = scenario(gpu, isl, osl, ttft, tpot, configs)
        tc = r.scenario.classes[0]
        print(f"\nQ{qi}: Llama-3.1-70B FP8, {GPUS}×{gpu}, ISL {isl} / OSL {osl}, p90 TTFT ≤ {ttft} ms, "
              f"TPOT ≤ {tpot} ms ({len(fluid)} disaggregated splits estimated)")
        print(f"  {'deployment':<22}{'GPUs':>5}{'fluid':>8}{'req/s':>8}{'tok/s/GPU':>11}{'TTFT p90':>10}"
              f"{'TPOT p90':>10}{'no SLO':>9}")
        best: dict[bool, tuple[float, str, float]] = {}
        errors = []
        for c in r.scenario.configurations:
            cap = capacity(r, c, tc, [(isl, osl)], DURATION_S)
            p = predict(r, c, tc, cap, [(isl, osl)], DURATION_S) if cap > 0 else {}
            per_gpu = cap * osl / c.gpus
            f = fluid.get(c.name)
            if f is not None and cap > 0:
                errors.append(f / cap - 1)
            print(f"  {label(c):<22}{c.gpus:>5}{f'{f:.2f}' if f is not None else '':>8}{cap:>8.2f}{per_gpu:>11.0f}"
                  f"{(p.get('ttft_p90') or 0) * 1e3:>10.0f}{(p.get('tpot_p90') or 0) * 1e3:>10.1f}"
                  f"{saturated(r, c, isl, osl):>9.0f}", flush=True)
            kind = c.disagg is not None
            if cap > best.get(kind, (-1.0, "", 0.0))[0]:
                best[kind] = (cap, label(c), per_gpu)
        (ca, la, ga), (cd, ld, gd) = best[False], best[True]
        print(f"  best aggregated {la}: {ca:.2f} req/s, {ga:.0f} output tok/s/GPU; best disaggregated {ld}: "
              f"{cd:.2f} req/s, {gd:.0f} tok/s/GPU; disaggregated/aggregated {cd / ca:.2f}×")
        if errors:
            print(f"  fluid estimate vs simulated capacity: median {statistics.median(errors):+.1%}, "
                  f"range {min(errors):+.1%} … {max(errors):+.1%} over {len(errors)} disaggregated splits")
        print(f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
