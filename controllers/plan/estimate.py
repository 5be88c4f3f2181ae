"""A steady-state estimate of a pool's capacity: the highest rate at which its classes' SLOs hold, from the
performance model alone (no simulation), with an error bar measured against the simulator (pure).

A replica at `λ` requests/s, with the pool's mean prompt and output lengths (ISL, OSL): R sequences run, each
getting a token every round (PP micro-batches of R/PP decodes, each carrying its share of the λ·ISL prompt
tokens/s that arrive), and R = λ·OSL·round (Little's law) — a fixed point that has no solution within what
memory, `max_num_seqs` and the token budget allow beyond the replica's saturation rate.
- TPOT: the round at λ. Held to the strictest TPOT target of the pool's classes.
- TTFT of a class's prompt at its attainment quantile: its chunks through the budget the decodes leave
  (`max_num_batched_tokens` − R per iteration), plus the wait for that prefill budget as an M/D/1 queue
  (its quantile from an exponential tail); E2E is TTFT + (OSL − 1) · TPOT at the class's quantiles.
- Correction factors (measured ÷ predicted, per shape) multiply the predicted TTFT and TPOT.
Replicas share the pool's traffic evenly (least-loaded dispatch): R replicas serve R times one's rate.
What it leaves out: the spread of round times (prefill-heavy iterations), preemption, the pooling gain of
least-loaded dispatch on queueing. `LOW` and `HIGH` bound how far the simulator's capacity lies from it.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from controllers.plan.candidates import Knobs, Pool
from controllers.plan.evaluate import Setup, stream
from deployments.engines.sim.configuration import AggregatedReplicas
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.steady_state import kv_capacity_seqs
from deployments.engines.sim.work import BatchShape

# log(simulated ÷ estimated capacity) lies within [−LOW, HIGH] on the shapes × workloads that
# tests/unit/test_plan_estimate.py checks (it prints the residuals): the band a screen must respect. Pipelines
# get the wider top: the estimate underrates them (a long prompt's chunks stream through PP stages, which its
# one-prefill-at-a-time queue does not see), by up to e^1.18 on shift.yaml's 4k-token summaries.
LOW = 0.25
HIGH = 0.35
HIGH_PP = 1.3
PRECISION = 0.005       # relative: where the bisections stop
SAMPLE = 2000           # requests drawn to know a class's lengths (mean and quantile)


@dataclass(frozen=True)
class Lengths:
    """One class's lengths: mean prompt and output, and both at the class's attainment quantile."""

    name: str
    share: float           # of the pool's requests
    isl: float
    osl: float
    isl_q: float
    osl_q: float


@dataclass(frozen=True)
class Estimate:
    """A pool's capacity (requests/s into the pool, engine clock) and its error bar."""

    rate: float
    binding: str           # what stops it: "throughput", or the class and target that binds first
    high: float = HIGH     # log of the error bar's top (HIGH_PP for pipelines)

    @property
    def lower(self) -> float:
        return self.rate * math.exp(-LOW)

    @property
    def upper(self) -> float:
        return self.rate * math.exp(self.high)


def lengths(setup: Setup, names: Sequence[str], seed: int) -> list[Lengths]:
    """The lengths of a class group, from a sample of the stream the simulations draw."""
    reqs = stream(setup, names, SAMPLE, seed)
    out = []
    for c in setup.group(names):
        mine = [r for r in reqs if r.tag == c.name] or [r for r in stream(setup, [c.name], 64, seed)]
        isl = np.array([r.prompt_len for r in mine], dtype=float)
        osl = np.array([r.output_len for r in mine], dtype=float)
        q = 100 * c.slo.attainment
        out.append(Lengths(c.name, c.share, float(isl.mean()), float(osl.mean()), float(np.percentile(isl, q)),
                           float(np.percentile(osl, q))))
    return out


class _Replica:
    """One replica's fluid figures at a rate."""

    def __init__(self, factory: ReplicaFactory, isl: float, osl: float):
        self.perf, self.pp = factory.cost_model, factory.pp
        self.isl, self.osl = isl, osl
        e = factory.engine
        self.budget = e.max_num_batched_tokens
        self.limit = min(float(e.max_num_seqs), float(kv_capacity_seqs(factory, round(isl), max(1, round(osl)))))

    def round_of(self, rate: float, running: float) -> float:
        """Seconds between two tokens of a sequence when `running` sequences decode and prompts arrive at `rate`.

        A prompt's prefill (its chunks, pipelined over the stages) holds up every decode for its latency W,
        during which each sequence gets one token (a micro-batch behind it cannot overtake it at any stage):
        per second a sequence gets (1 − rate·W) / R₀ + rate tokens, R₀ the round without prompts. That is
        for prompts that arrive apart; when they overlap, they share iterations, at worst every micro-batch
        full of prompt tokens. Never below the round with the prompt tokens spread evenly (the convex cost's
        lower bound: tokens added to a memory-bound decode step are nearly free, a chunk's are not)."""
        d = max(1.0, running / self.pp)
        alone = self._round(d, 0.0)
        room = max(1.0, self.budget / self.pp - d)
        prompts_per_round = rate * alone * self.isl
        even = self._round(d, min(room, prompts_per_round / self.pp))
        held = rate * (self.prefill_s(d) - alone)
        apart = alone / (1 - held) if held < 1 else math.inf
        return max(even, min(apart, self._round(d, room)))

    def prefill_s(self, d: float, prompt: float | None = None) -> float:
        """Latency of one prompt (default: the mean) with `d` decodes in every micro-batch: its chunks, each
        starting a stage after the one before."""
        p = self.isl if prompt is None else prompt
        room = max(1.0, self.budget / self.pp - d)
        chunks = math.ceil(p / room)
        lat, stage = self._cost(d, min(p, room))
        return (chunks - 1) * stage + lat

    def prefill_busy_s(self, d: float) -> float:
        """Seconds one mean prompt keeps the slowest stage busy: how soon the next prompt's prefill can follow."""
        room = max(1.0, self.budget / self.pp - d)
        chunks = math.ceil(self.isl / room)
        return chunks * self._cost(d, min(self.isl, room))[1]

    def _round(self, decodes: float, prefill: float) -> float:
        lat, stage = self._cost(decodes, prefill)
        return max(lat, self.pp * stage)

    def _cost(self, decodes: float, prefill: float) -> tuple[float, float]:
        cost = self.perf.step(BatchShape(
            prefill_tokens=round(prefill), prefill_seqs=max(1, round(prefill / self.isl)) if prefill >= 1 else 0,
            prefill_attn_pairs=prefill * (self.isl + 1) / 2.0, decode_seqs=round(decodes),
            decode_context=round(decodes * (self.isl + self.osl / 2.0))))
        return cost.latency_s, cost.stage_s

    def round_at(self, rate: float) -> tuple[float, float] | None:
        """(running sequences, seconds per round) at `rate` requests/s; None beyond saturation."""
        rnd = self.round_of(0.0, 1.0)
        for _ in range(60):
            running = rate * self.osl * rnd
            if running > self.limit or running + rate * self.isl * rnd > self.budget:
                return None
            new = self.round_of(rate, running)
            if abs(new - rnd) <= 1e-4 * rnd:
                return running, new
            if new > 50 * rnd:
                return None
            rnd = new
        return rate * self.osl * rnd, rnd

    def ttft(self, rate: float, running: float, rnd: float, prompt: float, quantile: float) -> float:
        """A `prompt`-token prompt's time to first token at `rate`: its prefill, and the wait for the prompts
        ahead (M/D/1 at their utilisation of the prefill, its `quantile` from an exponential tail)."""
        d = max(1.0, running / self.pp)
        own = self.prefill_s(d, prompt)
        service = self.prefill_busy_s(d)
        rho = rate * service
        if rho >= 1:
            return math.inf
        mean_wait = rho * service / (2 * (1 - rho))
        tail = 1 - quantile
        wait = mean_wait / rho * math.log(rho / tail) if rho > tail else 0.0
        return own + wait + rnd / 2


def _holds(rep: _Replica, classes: Sequence[Lengths], slos: dict[str, tuple[float | None, float | None, float | None,
                                                                          float]],
           factors: tuple[float, float], rate: float) -> str | None:
    """None when every class meets its SLO at `rate` requests/s into one replica, else what fails first."""
    at = rep.round_at(rate)
    if at is None:
        return "throughput"
    running, rnd = at
    tpot = rnd * factors[1]
    for c in classes:
        ttft_ms, tpot_ms, e2e_ms, attainment = slos[c.name]
        if tpot_ms is not None and tpot * 1e3 > tpot_ms:
            return f"{c.name} TPOT"
        if ttft_ms is None and e2e_ms is None:
            continue
        ttft = rep.ttft(rate, running, rnd, c.isl_q, attainment) * factors[0]
        if ttft_ms is not None and ttft * 1e3 > ttft_ms:
            return f"{c.name} TTFT"
        if e2e_ms is not None and (ttft + (c.osl_q - 1) * tpot) * 1e3 > e2e_ms:
            return f"{c.name} E2E"
    return None


def estimate(setup: Setup, pool: Pool, knobs: Knobs, classes: Sequence[Lengths]) -> Estimate:
    """The highest rate into `pool` at which every class's SLO holds in the fluid model (bisection on the
    rate of one replica), times its replicas; 0 when not even the lowest rate holds. The setup's correction
    factors of the pool's shape multiply the predicted TTFT and TPOT."""
    high = HIGH_PP if pool.shape.pp > 1 else HIGH
    factors = setup.factors(pool.shape)
    replicas = setup.replicas(replace(pool, replicas=1), knobs)
    assert isinstance(replicas, AggregatedReplicas), "the steady-state estimate screens aggregated pools"
    factory = replicas.factory
    if max(c.isl_q + c.osl_q for c in classes) > factory.max_model_len:
        return Estimate(0.0, "length", high)
    isl = sum(c.share * c.isl for c in classes)
    osl = sum(c.share * c.osl for c in classes)
    rep = _Replica(factory, isl, osl)
    slos = {c.name: (c.slo.ttft_ms, c.slo.tpot_ms, c.slo.e2e_ms, c.slo.attainment)
            for c in setup.group([c.name for c in classes])}
    # Saturation: the highest rate whose fixed point exists (doubling, then bisection).
    lo, hi = 0.0, 1.0
    while rep.round_at(hi) is not None:
        lo, hi = hi, hi * 2
    while hi - lo > PRECISION * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rep.round_at(mid) is not None else (lo, mid)
    top = lo
    if top <= 0:
        return Estimate(0.0, "throughput", high)
    first = _holds(rep, classes, slos, factors, top * 1e-3)
    if first is not None:
        return Estimate(0.0, first, high)
    lo, hi = top * 1e-3, top
    binding = _holds(rep, classes, slos, factors, top) or "throughput"
    if binding == "throughput" and _holds(rep, classes, slos, factors, top * 0.999) is None:
        return Estimate(top * pool.replicas, "throughput", high)
    while hi > lo * (1 + PRECISION):
        mid = math.sqrt(lo * hi)
        why = _holds(rep, classes, slos, factors, mid)
        if why is None:
            lo = mid
        else:
            hi, binding = mid, why
    return Estimate(lo * pool.replicas, binding, high)
