"""Model-assisted what-if, with the live engine's own replicas (`ReplicaFactory.for_deployment`):

- replay: per configuration, exactly the requests it received in the run (arrival times, lengths, classes,
  the replica that served each, from the records) through the offline simulator, judged per class against
  what was measured. With the simulated engine the two must agree; with vLLM the difference is the
  simulator's error on that hardware;
- capacity: per class alone, the highest arrival rate at which each configuration still meets the class's
  SLO attainment target (and its prediction at the class's observed rate), for the study comparison;
- why: the cost terms of a prefill and a decode step per configuration.
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controllers import runfolder as rf
from controllers.policies import headroom
from controllers.records import Rec, attainment_interval, measured
from controllers.scoreboard import PairStats, Quantiles
from deployments.engines.sim.configuration import configuration_replicas
from deployments.engines.sim.offline import RequestRecord as SimRecord
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.work import BatchShape
from deployments.resolve import Resolved
from loadgen.lengths import mean_lengths
from loadgen.records import RequestRecord, read_records
from schema.deployment import ParallelConfig
from schema.traffic import SLO, TrafficClass

MIN_REQUESTS = 60
MAX_REQUESTS = 600
DECODE_BATCH = 64


def replicas(resolved: Resolved, c: ParallelConfig) -> ReplicaFactory:
    """The replicas of configuration `c`, built exactly as the live simulated engine builds them."""
    return ReplicaFactory.for_deployment(resolved.scenario, c, resolved.model, resolved.gpu)


def _met(r: SimRecord, slo: SLO) -> bool:
    """The one SLO judgment (`SLO.met`) of a simulated request (one output token: no TPOT to judge)."""
    return slo.met(r.ttft, r.tpot if r.output_len > 1 else None, r.e2e)


def _quantiles(a: Sequence[float]) -> Quantiles:
    return Quantiles(*(float(np.percentile(a, p)) for p in (50, 90, 99))) if len(a) else Quantiles()


# --- replay -------------------------------------------------------------------------------------------------
def replay(resolved: Resolved, c: ParallelConfig, records: Sequence[RequestRecord]) -> list[tuple[RequestRecord,
                                                                                                   SimRecord]]:
    """Every request configuration `c`'s engine held, replayed offline on `c`'s replicas at its send time
    (engine clock) with its prompt and output lengths; pairs of (record on the engine clock, simulated
    request). Warm-up requests loaded the engine like the others; requests cut off by a timeout or the end of
    the run ran up to then, and are replayed whole (only requests that finished before the cut-off are
    compared, and they met them only before it). Refused requests never reached the engine. Each request
    goes to the replica that served it where every record names one (a replica that replaced another
    mid-run is a fresh engine); otherwise replicas are dispatched least-loaded, which may differ from the
    live router's choice request by request."""
    k = resolved.scenario.engine.clock_scale
    mine = sorted((r for r in records if r.config == c.name and r.send_time is not None
                   and r.status in ("ok", "timeout", "cancelled")), key=lambda r: r.send_time or 0.0)
    if not mine:
        return []
    t0 = mine[0].send_time or 0.0
    named = all(r.replica is not None for r in mine)
    index = {name: i for i, name in enumerate(sorted({r.replica or "" for r in mine}))} if named else {}
    specs = [RequestSpec(r.prompt_tokens or r.planned_prompt_tokens,
                         r.output_tokens if r.status == "ok" and r.output_tokens else r.max_tokens,
                         ((r.send_time or t0) - t0) / k, r.sla_class, index.get(r.replica or "")) for r in mine]
    result = run_offline(replicas(resolved, c), specs, replicas=len(index) if named else c.replicas)
    return [(r.on_engine_clock(k), sim) for r, sim in zip(mine, result.records, strict=True)]


def _relative_error(pred: Sequence[float], meas: Sequence[float | None]) -> float | None:
    """Median of (predicted − measured) / measured over the requests that have both."""
    errs = [p / m - 1 for p, m in zip(pred, meas, strict=True) if m]
    return float(np.median(errs)) if errs else None


def compare(tc: TrafficClass, pairs: Sequence[tuple[RequestRecord, SimRecord]]) -> dict[str, Any] | None:
    """One class on one configuration: the replay's attainment against the measured one over the same
    requests (the answered ones; warm-up left out). They agree when the prediction lies in the 95 %
    interval of the measured attainment — what that many requests can resolve."""
    scored = [(r, s) for r, s in pairs if r.sla_class == tc.name and r.scored and r.status == "ok"]
    if not scored:
        return None
    n = len(scored)
    met = [_met(s, tc.slo) for _, s in scored]
    measured_met = [r.meets(tc.slo) for r, _ in scored]
    n_met = sum(measured_met)
    lo, hi = attainment_interval(n_met, n)
    attainment = sum(met) / n
    sims = [s for _, s in scored]
    ttft, tpot, e2e = ([x.ttft for x in sims], [x.tpot for x in sims if x.output_len > 1], [x.e2e for x in sims])
    stats = PairStats("", tc.name, samples=n, attainment=attainment, ttft=_quantiles(ttft), tpot=_quantiles(tpot),
                      e2e=_quantiles(e2e))
    multi = [(r, s) for r, s in scored if s.output_len > 1]
    # Per-request latency error against the server's own figures where it reports them (without the HTTP
    # path between client and server), else against the client's.
    server = all(r.server_ttft_s is not None for r, _ in scored)
    ttft_meas = [r.server_ttft_s if server else r.ttft_s for r, _ in scored]
    tpot_meas = [r.server_tpot_s if server else r.tpot_s for r, _ in multi]
    return {
        "requests": n, "attainment": attainment, "meets": tc.slo.attained(attainment),
        "measured_attainment": n_met / n, "interval": [lo, hi], "agrees": lo <= attainment <= hi,
        "flipped": sum(a != b for a, b in zip(met, measured_met, strict=True)),
        "headroom": headroom(stats, tc.slo), "ttft_p90": stats.ttft.p90, "tpot_p90": stats.tpot.p90,
        "e2e_p90": stats.e2e.p90,
        "ttft_error": _relative_error(ttft, ttft_meas),
        "tpot_error": _relative_error([s.tpot for _, s in multi], tpot_meas),
        "error_basis": "server" if server else "client",
    }


# --- one class alone ---------------------------------------------------------------------------------------
def _workload(rate: float, lengths: Sequence[tuple[int, int]], n: int, seed: int) -> list[RequestSpec]:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n)
    picks = rng.integers(0, len(lengths), n)
    t = np.cumsum(gaps)
    return [RequestSpec(int(lengths[k][0]), int(lengths[k][1]), float(at)) for k, at in zip(picks, t, strict=True)]


def predict(resolved: Resolved, c: ParallelConfig, tc: TrafficClass, rate: float,
            lengths: Sequence[tuple[int, int]], duration_s: float, seed: int = 0) -> dict[str, Any]:
    """Simulate `rate` req/s of class `tc` alone on configuration `c` (engine clock), aggregated or
    disaggregated."""
    n = int(min(MAX_REQUESTS, max(MIN_REQUESTS, rate * duration_s)))
    try:
        result = configuration_replicas(resolved.scenario, c, resolved.model, resolved.gpu).run(
            _workload(rate, lengths, n, seed))
    except ValueError as e:   # a request this configuration cannot hold at all (KV cache / max_model_len)
        return {"sla_class": tc.name, "config": c.name, "rate": rate, "requests": n, "attainment": 0.0,
                "meets": False, "headroom": None, "ttft_p90": None, "tpot_p90": None, "e2e_p90": None,
                "error": str(e)}
    recs = result.records
    attainment = float(np.mean([_met(r, tc.slo) for r in recs]))
    stats = PairStats(c.name, tc.name, samples=n, attainment=attainment, ttft=_quantiles([r.ttft for r in recs]),
                      tpot=_quantiles([r.tpot for r in recs]), e2e=_quantiles([r.e2e for r in recs]))
    return {"sla_class": tc.name, "config": c.name, "rate": rate, "requests": n, "attainment": attainment,
            "meets": tc.slo.attained(attainment), "headroom": headroom(stats, tc.slo),
            "ttft_p90": stats.ttft.p90, "tpot_p90": stats.tpot.p90, "e2e_p90": stats.e2e.p90}


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


def _observed(records: Sequence[Rec], tc: TrafficClass) -> list[tuple[int, int]]:
    pairs = [(r.prompt_tokens, r.output_tokens) for r in records
             if r.sla_class == tc.name and r.ok and r.prompt_tokens and r.output_tokens]
    if pairs:
        return pairs
    isl, osl = mean_lengths(tc)
    return [(max(1, round(isl)), max(1, round(osl)))]


def planned_capacities(resolved: Resolved) -> dict[tuple[str, str], float]:
    """Capacity of every (class, configuration) for the class's planned mean lengths (before any traffic)."""
    s = resolved.scenario
    out = {}
    for tc in s.classes:
        isl, osl = mean_lengths(tc)
        lengths = [(max(1, round(isl)), max(1, round(osl)))]
        for c in s.configurations:
            out[(tc.name, c.name)] = capacity(resolved, c, tc, lengths, s.load.duration_s, s.load.seed, steps=3)
    return out


# --- why -----------------------------------------------------------------------------------------------------
def cost_terms(resolved: Resolved, isl: int, context: int) -> dict[str, dict[str, dict[str, float]]]:
    """Per configuration, seconds per cost term of a prefill step (one prompt of `isl` tokens, chunked as
    the engine would) and of a decode step (DECODE_BATCH sequences at `context` tokens)."""
    chunk = min(isl, resolved.scenario.engine.max_num_batched_tokens)
    prefill = BatchShape(prefill_tokens=chunk, prefill_seqs=1, prefill_attn_pairs=chunk * (chunk + 1) / 2)
    decode = BatchShape(decode_seqs=DECODE_BATCH, decode_context=DECODE_BATCH * context)
    out: dict[str, dict[str, dict[str, float]]] = {"prefill": {}, "decode": {}}
    for c in resolved.scenario.configurations:
        perf = replicas(resolved, c).cost_model
        out["prefill"][c.name] = dict(perf.step(prefill).terms)
        out["decode"][c.name] = dict(perf.step(decode).terms)
    return out


# --- whatif.json ---------------------------------------------------------------------------------------------
def whatif(resolved: Resolved, records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Per (class, configuration): the replay of the traffic the configuration received, and the class alone
    at its observed rate in the run's last sweep step (the final routing's load) with its capacity."""
    s = resolved.scenario
    scale = s.engine.clock_scale
    recs = measured(records, scale, {c.name: c.slo for c in s.classes})
    step = max((r.rate_step for r in recs), default=0)
    span = s.load.duration_s / scale
    preds = []
    for c in s.configurations:
        try:
            pairs = replay(resolved, c, records)
            error = None
        except ValueError as e:   # a request this configuration cannot hold at all
            pairs, error = [], str(e)
        for tc in s.classes:
            p: dict[str, Any] = {"sla_class": tc.name, "config": c.name}
            replayed = compare(tc, pairs)
            if replayed is not None:
                p |= replayed
            elif error is not None:
                p["error"] = error
            n = sum(1 for r in recs if r.sla_class == tc.name and r.rate_step == step)
            if n and span > 0:
                lengths = _observed(recs, tc)
                rate = n / span
                p["alone"] = predict(resolved, c, tc, rate, lengths, span, seed=s.load.seed)
                p["capacity"] = capacity(resolved, c, tc, lengths, span, seed=s.load.seed, steps=3)
                p["capacity_ratio"] = p["capacity"] / rate
            preds.append(p)
    isl = max(mean_lengths(tc)[0] for tc in s.classes)
    ctx = sum(tc.share * (mean_lengths(tc)[0] + mean_lengths(tc)[1] / 2) for tc in s.classes)
    return {
        "note": ("Predicted: the offline simulator (the live simulated engine's replicas, cost model and scheduler) "
                 "replaying exactly the requests each configuration received — send times, prompt and output "
                 "lengths, classes, each on the replica that served it — judged per class like the measurement. "
                 "It agrees when it lies within the 95 % interval of the measured attainment over those requests. "
                 "With the simulated engine the schedule is the same; what is left of the difference is the "
                 "real-time delivery (a request reaching its engine a few ms after it was sent, or the process "
                 "woken late on a busy machine), which can move a request near an SLO threshold to the other "
                 "side. Capacity: the highest rate of the class alone at which the configuration still meets the "
                 "class's SLO attainment target."),
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
    path = folder / rf.RECORDS_JSONL
    out.write_text(json.dumps(whatif(resolved, read_records(path) if path.exists() else []), indent=1))
    return out
