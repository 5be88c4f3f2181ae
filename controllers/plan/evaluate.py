"""One pool, simulated offline on the scenario's own traffic: its saturation throughput, its capacity under
the SLOs of the classes routed to it, and its figures at a given rate.

Everything runs through the one simulator (`ReplicaFactory` built from the scenario's `EngineConfig`,
`run_offline`, `class_mix`, the `meets` judgment of a request), so every engine option reaches the plan.

Common random numbers: every run of a class group with a given seed uses one request stream (class
draws, lengths, unit-rate arrival gaps) compressed in time to the rate asked for, so that candidates and
rates are compared on the same requests and the capacity search sees a monotone problem.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from controllers.plan.candidates import Knobs, Pool, Shape
from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.configuration import Replicas, configuration_replicas
from deployments.engines.sim.disagg import DisaggregatedReplicas
from deployments.engines.sim.offline import OfflineResult, RequestRecord, RequestSpec
from deployments.engines.sim.perf_model import TERMS
from deployments.engines.sim.stats import summarize
from deployments.engines.sim.workload import class_mix
from deployments.resolve import Resolved
from schema.deployment import EngineConfig
from schema.scenario import Scenario
from schema.traffic import ConstantArrival, GammaArrival, PoissonArrival, TrafficClass

OpenArrival = PoissonArrival | GammaArrival | ConstantArrival


class PlanError(ValueError):
    """A scenario or option the planner cannot work with; the message names the field and the fix."""


@dataclass(frozen=True)
class Fidelity:
    """How hard one capacity search works: requests per run (between the bounds, enough for the run to span
    `horizon` times the median E2E latency of the previous run, and never fewer than a class needs to show
    `misses` misses at its attainment target: a p99 target needs ten times the requests of a p90 one), how
    much of a run is warm-up and not judged (`warmup` median E2E latencies: queues and batches take several
    request lifetimes to settle from an empty engine), and the relative width at which the bisection stops."""

    min_requests: int
    max_requests: int
    tolerance: float
    misses: float
    horizon: float
    warmup: float


COARSE = Fidelity(min_requests=32, max_requests=160, tolerance=0.3, misses=1.5, horizon=3, warmup=1)
SCREEN = Fidelity(min_requests=64, max_requests=400, tolerance=0.1, misses=3, horizon=4, warmup=1.5)
REFINE = Fidelity(min_requests=200, max_requests=1600, tolerance=0.04, misses=6, horizon=7, warmup=3)


@dataclass(frozen=True)
class Setup:
    """What every evaluation of one scenario shares; small and picklable (it travels to worker processes)."""

    spec: Scenario
    model: ModelSpec
    gpu: GpuSpec
    base_dir: Path | None
    spread_pp: bool
    # Per shape (tp, pp): (TTFT, TPOT) correction factors, measured ÷ predicted (controllers/correction.py);
    # every judged TTFT and TPOT of that shape is multiplied by them. Shapes not named: (1, 1).
    corrections: tuple[tuple[tuple[int, int], tuple[float, float]], ...] = ()

    @classmethod
    def of(cls, resolved: Resolved, spread_pp: bool) -> "Setup":
        arrival = resolved.scenario.load.arrival
        if not isinstance(arrival, OpenArrival):
            raise PlanError(f"{resolved.source}: load.arrival: the planner searches the highest request rate of an "
                            f"open arrival process (poisson, gamma or constant), not {arrival.kind}; change "
                            "load.arrival.kind")
        return cls(resolved.scenario, resolved.model, resolved.gpu, Path(resolved.source).parent, spread_pp)

    @property
    def classes(self) -> list[TrafficClass]:
        return self.spec.classes

    @property
    def engine(self) -> EngineConfig:
        return self.spec.engine

    @property
    def arrival(self) -> OpenArrival:
        a = self.spec.load.arrival
        assert isinstance(a, OpenArrival)
        return a

    def corrected(self, factors: Mapping[tuple[int, int], tuple[float, float]]) -> "Setup":
        """This setup with the predicted TTFT and TPOT of each shape multiplied by its (TTFT, TPOT) factors."""
        return replace(self, corrections=tuple(sorted((k, (float(a), float(b))) for k, (a, b) in factors.items()
                                                      if (a, b) != (1.0, 1.0))))

    def factors(self, shape: Shape) -> tuple[float, float]:
        """(TTFT, TPOT) correction factors of a shape: (1, 1) unless `corrections` names it."""
        return next((f for k, f in self.corrections if k == (shape.tp, shape.pp)), (1.0, 1.0))

    def pool_factors(self, pool: Pool) -> tuple[float, float]:
        """(TTFT, TPOT) correction factors of a pool: its shape's; a disaggregated pool's TTFT factor is its
        prefill shape's (the prefill replicas produce the first token), its TPOT factor its decode shape's."""
        first = pool.prefill.shape if pool.prefill is not None else pool.shape
        return self.factors(first)[0], self.factors(pool.shape)[1]

    def group(self, names: Sequence[str]) -> list[TrafficClass]:
        """The classes of a pool, their shares renormalised to the pool's own traffic."""
        chosen = [c for c in self.classes if c.name in names]
        total = sum(c.share for c in chosen)
        return [c.model_copy(update={"share": c.share / total}) for c in chosen]

    def to_judge(self, names: Sequence[str], misses: float) -> int:
        """Requests a run of these classes needs for each class to show `misses` misses at its target."""
        return max(math.ceil(misses / ((1 - c.slo.attainment) * c.share)) if c.slo.attainment < 1 else 0
                   for c in self.group(names))

    def share(self, names: Sequence[str]) -> float:
        """Fraction of all requests that belong to these classes."""
        return sum(c.share for c in self.classes if c.name in names)

    def spec_with(self, knobs: Knobs) -> Scenario:
        """The scenario with the engine options `knobs`; every other setting flows through unchanged."""
        return self.spec.model_copy(update={"kv_dtype": knobs.kv_dtype, "engine": knobs.engine(self.spec.engine)})

    def replicas(self, pool: Pool, knobs: Knobs) -> Replicas:
        """The pool's replicas with the engine options `knobs`, built exactly as the live simulated engine builds
        them (every other engine setting, calibration and memory model of the scenario included); a
        disaggregated pool's roles packed on the scenario's nodes in order, which prices each KV handoff."""
        cfg = pool.config("plan", self.spec.hardware.gpus_per_node, self.spread_pp)
        return configuration_replicas(self.spec_with(knobs), cfg, self.model, self.gpu)


def stream(setup: Setup, names: Sequence[str], n: int, seed: int) -> list[RequestSpec]:
    """`n` requests of a class group at 1 request/s (the scenario's arrival process and lengths)."""
    unit = setup.arrival.model_copy(update={"rate": 1.0})
    reqs, _ = class_mix(setup.group(names), unit, 1.0, float(n), seed, setup.base_dir)
    return reqs[:n]


def at_rate(reqs: Sequence[RequestSpec], rate: float) -> list[RequestSpec]:
    """The same requests arriving `rate` times faster (arrival times scale as 1/rate)."""
    return [replace(r, arrival=r.arrival / rate) for r in reqs]


@dataclass(frozen=True)
class Miss:
    """One SLO target a class misses: its latency at the attainment percentile against the target."""

    sla_class: str
    metric: str           # TTFT, TPOT, E2E; "all targets" (each holds alone, not together); "length" (too long)
    value_ms: float
    target_ms: float
    attainment: float
    target_attainment: float

    def __str__(self) -> str:
        if self.metric == "length":
            return (f"{self.sla_class}: requests of up to {self.value_ms:,.0f} tokens exceed the {self.target_ms:,.0f}"
                    "-token limit of one replica (KV cache / max_model_len)")
        if self.metric == "all targets":
            return (f"{self.sla_class}: {self.attainment:.2%} of requests meet all its targets together "
                    f"< {self.target_attainment * 100:.4g}% (each alone holds)")
        q = round(self.target_attainment * 100, 1)
        over = self.value_ms / self.target_ms - 1
        return (f"{self.sla_class}: p{q:g} {self.metric} {self.value_ms:,.4g} ms > {self.target_ms:,.4g} ms target "
                f"({over:+.1%}; attainment {self.attainment:.2%} < {self.target_attainment * 100:.4g}%)")


@dataclass(frozen=True)
class ClassFigures:
    requests: int
    attainment: float
    ttft_ms: dict[str, float]
    tpot_ms: dict[str, float]
    misses: tuple[Miss, ...]

    @property
    def met(self) -> bool:
        return not self.misses


@dataclass(frozen=True)
class RunFigures:
    """One pool at one offered rate (requests/s into the pool, engine clock)."""

    rate: float
    classes: dict[str, ClassFigures]
    goodput: float                  # requests/s that meet every SLO of their class
    output_tokens_per_s: float      # offered output tokens/s (= served while the pool keeps up)
    breakdown: dict[str, float]     # share of iteration time per cost term
    e2e_p50_s: float = 0.0          # median end-to-end latency (sizes the next run's horizon)
    gpu_ms_per_token: dict[str, float] = field(default_factory=dict)   # GPU busy time per output token, by term

    @property
    def met(self) -> bool:
        return all(c.met for c in self.classes.values())

    @property
    def misses(self) -> tuple[Miss, ...]:
        return tuple(m for c in self.classes.values() for m in c.misses)


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3 if len(values) else 0.0


def judge(setup: Setup, records: Sequence[RequestRecord], rate: float, result: OfflineResult | None,
          tps: Sequence[int], warmup_s: float = 0.0, factors: tuple[float, float] = (1.0, 1.0)) -> RunFigures:
    """Per-class attainment and latencies of a run's records, those that arrived in its first `warmup_s`
    left out (never more than the first half of the run); `tps`: the TP of each of `result`'s cores; each TTFT
    and TPOT multiplied by `factors` (and the E2E with them)."""
    if records and warmup_s > 0:
        t0 = records[0].arrival
        cut = t0 + min(warmup_s, (records[-1].arrival - t0) / 2)
        records = [r for r in records if r.arrival >= cut]
    judged = [_corrected(r, factors) for r in records] if factors != (1.0, 1.0) else records
    classes = {}
    met_total = 0
    for tc in setup.classes:
        recs = [r for r in judged if r.tag == tc.name]
        if not recs:
            continue
        ok = [tc.slo.met(r.ttft, r.tpot, r.e2e) for r in recs]
        met_total += sum(ok)
        attainment = sum(ok) / len(recs)
        ttft = [r.ttft for r in recs]
        tpot = [r.tpot for r in recs if r.output_len > 1]
        misses = []
        if attainment < tc.slo.attainment:
            q = tc.slo.attainment * 100
            e2e = [r.e2e for r in recs]
            for metric, values, target in (("TTFT", ttft, tc.slo.ttft_ms), ("TPOT", tpot, tc.slo.tpot_ms),
                                           ("E2E", e2e, tc.slo.e2e_ms)):
                if target is not None and values and _pct(values, q) > target:
                    misses.append(Miss(tc.name, metric, _pct(values, q), target, attainment, tc.slo.attainment))
            if not misses:   # each target alone holds at the percentile; together they do not
                misses.append(Miss(tc.name, "all targets", 0.0, 0.0, attainment, tc.slo.attainment))
        classes[tc.name] = ClassFigures(
            len(recs), attainment, {"p50": _pct(ttft, 50), "p90": _pct(ttft, 90)},
            {"p50": _pct(tpot, 50), "p90": _pct(tpot, 90)}, tuple(misses))
    out_tokens = sum(r.output_len for r in judged)
    breakdown: dict[str, float] = {}
    per_token: dict[str, float] = {}
    if result is not None:
        breakdown = summarize(result)["breakdown"]
        total_out = sum(r.output_len for r in result.records)
        for core, tp in zip(result.cores, tps, strict=True):
            for k, v in core.term_seconds.items():
                per_token[k] = per_token.get(k, 0.0) + v * tp * 1e3 / max(1, total_out)
    n = max(1, len(judged))
    median_e2e = float(np.median([r.e2e for r in judged])) if judged else 0.0
    return RunFigures(rate, classes, goodput=rate * met_total / n, output_tokens_per_s=rate * out_tokens / n,
                      breakdown=breakdown, e2e_p50_s=median_e2e,
                      gpu_ms_per_token={k: per_token.get(k, 0.0) for k in TERMS})


def _corrected(r: RequestRecord, factors: tuple[float, float]) -> RequestRecord:
    """The record with its TTFT times factors[0] and its decoding time (hence TPOT) times factors[1]."""
    first = r.arrival + r.ttft * factors[0]
    return replace(r, first_token=first, finish=first + (r.finish - r.first_token) * factors[1])


def _too_long(setup: Setup, reqs: Sequence[RequestSpec], replicas: Replicas) -> Miss | None:
    """The longest request no replica can hold (a disaggregated pool's prefill replicas hold each prompt and its
    first token, its decode replicas the whole request), if any."""
    prompt_limit = replicas.prefill.max_model_len - 1 if isinstance(replicas, DisaggregatedReplicas) else math.inf
    worst = max(reqs, key=lambda r: r.prompt_len + r.output_len)
    if worst.prompt_len + worst.output_len > replicas.max_model_len:
        tokens, limit = worst.prompt_len + worst.output_len, replicas.max_model_len
    else:
        worst = max(reqs, key=lambda r: r.prompt_len)
        if worst.prompt_len <= prompt_limit:
            return None
        tokens, limit = worst.prompt_len + 1, int(prompt_limit) + 1
    tc = next(c for c in setup.classes if c.name == worst.tag)
    return Miss(tc.name, "length", tokens, limit, 0.0, tc.slo.attainment)


def run_at(setup: Setup, pool: Pool, knobs: Knobs, rate: float, n: int, seed: int, warmup: float) -> RunFigures:
    """Simulate `n` requests of the pool's classes at `rate` requests/s through its replicas; the first `warmup`
    median E2E latencies of arrivals are not judged."""
    replicas = setup.replicas(pool, knobs)
    reqs = at_rate(stream(setup, pool.classes, n, seed), rate)
    long = _too_long(setup, reqs, replicas)
    if long is not None:
        return RunFigures(rate, {long.sla_class: ClassFigures(0, 0.0, {}, {}, (long,))}, 0.0, 0.0, {})
    result = replicas.run(reqs)
    median_e2e = float(np.median([r.e2e for r in result.records]))
    return judge(setup, result.records, rate, result, pool.tps, warmup * median_e2e, setup.pool_factors(pool))


def run_requests(setup: Setup, pool: Pool, knobs: Knobs, reqs: Sequence[RequestSpec]) -> list[RequestRecord] | Miss:
    """Given requests through the pool's replicas (records in request order), or the miss of a request no
    replica can hold."""
    if not reqs:
        return []
    replicas = setup.replicas(pool, knobs)
    long = _too_long(setup, reqs, replicas)
    return long if long is not None else replicas.run(reqs).records


@dataclass(frozen=True)
class Saturation:
    """What one replica of a shape serves for a class group with every slot busy (a closed loop of
    `max_num_seqs` users): requests/s. Of a disaggregated pool: what the whole pool serves with every decode
    slot busy, per decode replica."""

    rate: float


def saturation(setup: Setup, pool: Pool, knobs: Knobs, seed: int) -> Saturation:
    """One replica of an aggregated pool (whatever its replica count), or the whole disaggregated pool."""
    unit = pool if pool.prefill is not None else replace(pool, replicas=1)
    replicas = setup.replicas(unit, knobs)
    users = knobs.max_num_seqs * unit.replicas
    reqs = stream(setup, pool.classes, 4 * users, seed)
    if _too_long(setup, reqs, replicas) is not None:
        return Saturation(0.0)
    result = replicas.run(reqs, concurrency=users)
    finish = sorted(r.finish for r in result.records)
    span = finish[-users - 1] - finish[users - 1]    # every slot busy: after the first wave, before the tail
    rate = (len(finish) - 2 * users) / span if span > 0 else len(finish) / max(finish[-1], 1e-9)
    return Saturation(rate / unit.replicas)


@dataclass(frozen=True)
class Capacity:
    """The highest rate (requests/s into the pool, engine clock) at which every class of the pool still meets
    its SLO attainment target, and what stops it there."""

    rate: float                 # 0: not even at the lowest rate tried
    upper: float                # the lowest rate found to fail (the saturation throughput if SLOs never bind)
    saturation: float           # requests/s with every slot of every replica busy
    misses: tuple[Miss, ...]    # what fails at `upper` (at the lowest rate tried when `rate` is 0)
    horizon_s: float            # simulated seconds a run at `rate` should span (sizes the request count)
    runs: int                   # simulations run (the saturation run not counted)

    @property
    def binding(self) -> str:
        """`throughput` when the pool saturates before any SLO binds, else the first target missed."""
        if not self.misses:
            return "throughput"
        m = self.misses[0]
        return f"{m.sla_class} {m.metric}"


def requests_for(rate: float, horizon_s: float, fid: Fidelity, least: int = 0) -> int:
    """Requests of one run: enough to span the horizon at `rate`, within the fidelity's bounds, never fewer than
    `least` (what the classes' attainment targets need to be judged)."""
    return int(max(least, min(fid.max_requests, max(fid.min_requests, math.ceil(rate * horizon_s)))))


def capacity(setup: Setup, pool: Pool, knobs: Knobs, fid: Fidelity, seed: int, guess: float | None = None,
             sat: Saturation | None = None) -> Capacity:
    """Search on a log scale for the highest rate that meets every SLO of the pool's classes: geometric steps
    from `guess` (wide ones without) until a rate that meets and one that fails bracket it, then bisection
    down to `fid.tolerance`. Never above the saturation throughput: a rate the replicas cannot serve is not
    sustainable, however lax the SLO."""
    sat = sat or saturation(setup, pool, knobs, seed)
    top = sat.rate * pool.replicas
    if top <= 0:
        miss = _too_long(setup, stream(setup, pool.classes, 4 * knobs.max_num_seqs, seed), setup.replicas(pool, knobs))
        return Capacity(0.0, 0.0, 0.0, (miss,) if miss else (), 0.0, 0)
    floor = top / 256
    step = 1 + 3 * fid.tolerance if guess else 4.0
    r = min(max(guess or top / 2, floor), top / (1 + fid.tolerance))
    lo, hi, tested_hi = 0.0, top, False
    misses: tuple[Miss, ...] = ()
    least = setup.to_judge(pool.classes, fid.misses)
    horizon = 0.0          # seconds a run must span; from the last run's median E2E (none yet: fewest requests)
    passed_horizon = 0.0
    runs = 0
    while True:
        n = requests_for(r, horizon, fid, least)
        while True:   # a run must span `fid.horizon` of its own median E2E: rerun longer until it does
            f = run_at(setup, pool, knobs, r, n, seed, fid.warmup)
            runs += 1
            horizon = fid.horizon * f.e2e_p50_s
            longer = requests_for(r, horizon, fid, least)
            if longer <= n * 1.25:
                break
            n = longer
        if f.met:
            lo, passed_horizon = r, horizon
        else:
            hi, misses, tested_hi = r, f.misses, True
        if lo == 0.0:
            if r <= floor:
                return Capacity(0.0, r, top, misses, horizon, runs)
            r = max(r / step, floor)
        elif hi / lo <= 1 + fid.tolerance:
            return Capacity(lo, hi, top, misses, passed_horizon, runs)
        else:
            r = math.sqrt(lo * hi) if tested_hi else min(math.sqrt(lo * hi), lo * step)
        step *= step
