"""Model-assisted what-if: for each class's observed arrival rate and length mix, the simulator predicts,
offline, how each configuration would serve that class alone — SLO attainment and headroom — and
why (the cost terms of a prefill and a decode step per configuration).
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controllers import runfolder as rf
from controllers.policies import headroom
from controllers.records import Rec, load_records
from controllers.scenario import Resolved
from controllers.scoreboard import PairStats, Quantiles
from deployments.catalog.memory import plan_memory
from deployments.config import ParallelConfig
from deployments.engines.sim.block_manager import BlockManager
from deployments.engines.sim.core import EngineCore
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.perf_model import PerfModel
from deployments.engines.sim.scheduler import Scheduler
from deployments.engines.sim.work import BatchShape
from loadgen.config import SLO, TrafficClass

MIN_REQUESTS = 60
MAX_REQUESTS = 600
DECODE_BATCH = 64


def _perf(resolved: Resolved, c: ParallelConfig) -> PerfModel:
    s = resolved.scenario
    return PerfModel(resolved.model, resolved.gpu, s.dtype, s.resolved_kv_dtype, c.tp, c.pp)


def _core_factory(resolved: Resolved, c: ParallelConfig) -> Any:
    s = resolved.scenario
    e = s.engine
    plan = plan_memory(resolved.model, resolved.gpu, s.dtype, s.resolved_kv_dtype, c.tp, c.pp,
                       e.gpu_memory_utilization, e.max_num_batched_tokens, e.block_size)
    perf = _perf(resolved, c)

    def make() -> EngineCore:
        blocks = BlockManager(max(1, plan.kv_tokens // e.block_size), e.block_size)
        return EngineCore(Scheduler(blocks, e.max_num_seqs, e.max_num_batched_tokens), perf, c.pp, e.max_model_len)
    return make


def _workload(rate: float, lengths: Sequence[tuple[int, int]], n: int, seed: int) -> list[RequestSpec]:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n)
    picks = rng.integers(0, len(lengths), n)
    t = np.cumsum(gaps)
    return [RequestSpec(int(lengths[k][0]), int(lengths[k][1]), float(at)) for k, at in zip(picks, t, strict=True)]


def _met(ttft: float, tpot: float, e2e: float, slo: SLO) -> bool:
    return all(v is None or x * 1000 <= v for x, v in ((ttft, slo.ttft_ms), (tpot, slo.tpot_ms), (e2e, slo.e2e_ms)))


def predict(resolved: Resolved, c: ParallelConfig, tc: TrafficClass, rate: float,
            lengths: Sequence[tuple[int, int]], duration_s: float, seed: int = 0) -> dict[str, Any]:
    """Simulate `rate` req/s of class `tc` alone on configuration `c` (engine clock)."""
    n = int(min(MAX_REQUESTS, max(MIN_REQUESTS, rate * duration_s)))
    try:
        result = run_offline(_core_factory(resolved, c), _workload(rate, lengths, n, seed), replicas=c.replicas)
    except ValueError as e:   # a request this configuration cannot hold at all (KV cache / max_model_len)
        return {"sla_class": tc.name, "config": c.name, "rate": rate, "requests": n, "attainment": 0.0,
                "meets": False, "headroom": None, "ttft_p90": None, "tpot_p90": None, "e2e_p90": None,
                "error": str(e)}
    ttft = np.array([r.ttft for r in result.records])
    tpot = np.array([r.tpot for r in result.records])
    e2e = np.array([r.e2e for r in result.records])
    met = [_met(a, b, x, tc.slo) for a, b, x in zip(ttft, tpot, e2e, strict=True)]

    def q(a: np.ndarray) -> Quantiles:
        return Quantiles(*(float(np.percentile(a, p)) for p in (50, 90, 99)))
    stats = PairStats(c.name, tc.name, samples=n, attainment=float(np.mean(met)), ttft=q(ttft), tpot=q(tpot),
                      e2e=q(e2e))
    attainment = float(np.mean(met))
    return {"sla_class": tc.name, "config": c.name, "rate": rate, "requests": n, "attainment": attainment,
            "meets": attainment >= tc.slo.attainment, "headroom": headroom(stats, tc.slo),
            "ttft_p90": stats.ttft.p90, "tpot_p90": stats.tpot.p90, "e2e_p90": stats.e2e.p90}


def cost_terms(resolved: Resolved, isl: int, context: int) -> dict[str, dict[str, dict[str, float]]]:
    """Per configuration, seconds per cost term of a prefill step (one prompt of `isl` tokens, chunked as
    the engine would) and of a decode step (DECODE_BATCH sequences at `context` tokens)."""
    chunk = min(isl, resolved.scenario.engine.max_num_batched_tokens)
    prefill = BatchShape(prefill_tokens=chunk, prefill_seqs=1, prefill_attn_pairs=chunk * (chunk + 1) / 2)
    decode = BatchShape(decode_seqs=DECODE_BATCH, decode_context=DECODE_BATCH * context)
    out: dict[str, dict[str, dict[str, float]]] = {"prefill": {}, "decode": {}}
    for c in resolved.scenario.configurations:
        perf = _perf(resolved, c)
        out["prefill"][c.name] = dict(perf.step(prefill).terms)
        out["decode"][c.name] = dict(perf.step(decode).terms)
    return out


def _observed(records: Sequence[Rec], tc: TrafficClass) -> list[tuple[int, int]]:
    pairs = [(r.prompt_tokens, r.output_tokens) for r in records
             if r.sla_class == tc.name and r.ok and r.prompt_tokens and r.output_tokens]
    if pairs:
        return pairs
    isl, osl = tc.mean_lengths()
    return [(max(1, round(isl)), max(1, round(osl)))]


def planned_capacities(resolved: Resolved) -> dict[tuple[str, str], float]:
    """Capacity of every (class, configuration) for the class's planned mean lengths (before any traffic)."""
    s = resolved.scenario
    out = {}
    for tc in s.classes:
        isl, osl = tc.mean_lengths()
        lengths = [(max(1, round(isl)), max(1, round(osl)))]
        for c in s.configurations:
            out[(tc.name, c.name)] = capacity(resolved, c, tc, lengths, s.load.duration_s, s.load.seed, steps=3)
    return out


def whatif(resolved: Resolved, records: Sequence[Rec]) -> dict[str, Any]:
    """Predictions at each class's observed rate in the run's last sweep step (the final routing's load)."""
    s = resolved.scenario
    scale = s.engine.clock_scale
    step = max((r.rate_step for r in records), default=0)
    last = [r for r in records if r.rate_step == step]
    span = s.load.duration_s / scale
    preds = []
    for tc in s.classes:
        n = sum(1 for r in last if r.sla_class == tc.name)
        rate = n / span if span > 0 and n else None
        if rate is None:
            continue
        lengths = _observed(records, tc)
        for c in s.configurations:
            p = predict(resolved, c, tc, rate, lengths, s.load.duration_s / scale, seed=s.load.seed)
            p["capacity"] = capacity(resolved, c, tc, lengths, s.load.duration_s / scale, seed=s.load.seed, steps=3)
            p["capacity_ratio"] = p["capacity"] / rate
            preds.append(p)
    isl = max(tc.mean_lengths()[0] for tc in s.classes)
    ctx = sum(tc.share * (tc.mean_lengths()[0] + tc.mean_lengths()[1] / 2) for tc in s.classes)
    return {
        "note": ("Simulated offline with the sim engine's cost model and scheduler, at the rate each class was "
                 "observed to arrive in the last sweep step, each class alone on each configuration (live, the "
                 "classes share the configurations they are routed to). Capacity: the highest rate of that class "
                 "alone at which the configuration still meets the class's SLO attainment target."),
        "rate_step": step,
        "predictions": preds,
        "cost_terms": cost_terms(resolved, math.ceil(isl), math.ceil(ctx)),
        "cost_note": (f"One prefill step of a {min(math.ceil(isl), s.engine.max_num_batched_tokens)}-token "
                      f"prompt chunk and one decode step of {DECODE_BATCH} sequences at ~{math.ceil(ctx)} tokens of "
                      "context, from the simulator's StepCost.terms: all-reduce under TP, pipeline transfers (p2p) "
                      "under PP. PP does not shorten a step; it keeps several micro-batches in flight."),
    }


def write_whatif(resolved: Resolved, folder: Path) -> Path:
    """whatif.json of a run folder, from its records."""
    out = folder / rf.WHATIF_JSON
    s = resolved.scenario
    scale = s.engine.clock_scale
    recs = load_records(folder / rf.RECORDS_JSONL, scale, {c.name: c.slo for c in s.classes})
    out.write_text(json.dumps(whatif(resolved, recs), indent=1))
    return out


def capacity(resolved: Resolved, c: ParallelConfig, tc: TrafficClass, lengths: Sequence[tuple[int, int]],
             duration_s: float, seed: int = 0, max_rate: float = 512.0, steps: int = 5) -> float:
    """Goodput capacity: the highest arrival rate (req/s, engine clock) of class `tc` alone at which the
    simulator predicts configuration `c` still meets the class's SLO attainment target (0: not even 1/16)."""
    def ok(rate: float) -> bool:
        return bool(predict(resolved, c, tc, rate, lengths, duration_s, seed)["meets"])
    lo, hi = 0.0, 1.0 / 16
    while hi <= max_rate and ok(hi):
        lo, hi = hi, hi * 2
    if lo == 0.0:
        return 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo
