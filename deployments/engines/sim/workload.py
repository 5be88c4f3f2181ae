"""Seeded synthetic workloads for offline simulation: fixed lengths, or a scenario's class mix."""

import math
from pathlib import Path

import numpy as np

from deployments.engines.sim.offline import RequestSpec
from loadgen.files import read_lengths, resolve_path
from schema.traffic import (
    PRESETS,
    ClosedLoop,
    ConstantArrival,
    EmpiricalLength,
    FixedLength,
    GammaArrival,
    LengthDist,
    LognormalLength,
    NormalLength,
    PoissonArrival,
    PresetLength,
    TrafficClass,
    UniformLength,
)


def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """`n` Poisson arrival times at `rate` requests/s, the first at 0."""
    gaps = rng.exponential(1.0 / rate, n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def fixed_workload(n: int, input_len: int, output_len: int, rate: float | None = None,
                   seed: int = 0) -> list[RequestSpec]:
    """`n` requests of fixed lengths: Poisson arrivals at `rate`, or all at t=0 when rate is None."""
    times = poisson_arrivals(n, rate, np.random.default_rng(seed)) if rate else np.zeros(n)
    return [RequestSpec(input_len, output_len, float(t)) for t in times]


def draw_lengths(dist: LengthDist, which: int, n: int, rng: np.random.Generator,
                 base_dir: Path | None = None) -> np.ndarray:
    """`n` token lengths from a scenario length distribution (`which`: 0 input, 1 output, for presets)."""
    match dist:
        case FixedLength(value=v):
            x = np.full(n, float(v))
            lo, hi = 1, None
        case UniformLength(min=a, max=b):
            x = rng.integers(a, b + 1, n).astype(float)
            lo, hi = a, b
        case NormalLength(mean=m, std=s, min=lo, max=hi):
            x = rng.normal(m, s, n)
        case LognormalLength(mean=m, sigma=s, min=lo, max=hi):
            x = rng.lognormal(math.log(m) - s * s / 2, s, n)   # mean m
        case PresetLength(name=name):
            x = np.full(n, float(PRESETS[name][which]))
            lo, hi = 1, None
        case EmpiricalLength(path=p, column=col):   # the load generator's reading: CSV / JSONL columns too
            values = np.array(read_lengths(resolve_path(p, base_dir), col), dtype=float)
            x = values[rng.integers(0, len(values), n)]
            lo, hi = 1, None
        case _:
            raise AssertionError(dist)
    return np.clip(np.rint(x), lo, hi if hi is not None else np.inf).astype(int)


def class_mix(classes: list[TrafficClass], arrival: PoissonArrival | GammaArrival | ConstantArrival | ClosedLoop,
              rate: float, duration_s: float, seed: int = 0,
              base_dir: Path | None = None) -> tuple[list[RequestSpec], int | None]:
    """Requests of a scenario's classes (by share) at one sweep rate; returns them and the closed-loop
    concurrency (None for open loops). Open loops offer `rate` requests/s for `duration_s`; a closed
    loop of `rate` users sends 8 requests per user.
    """
    rng = np.random.default_rng(seed)
    concurrency = None
    if isinstance(arrival, ClosedLoop):
        concurrency = max(1, round(rate))
        n = 8 * concurrency
        times = np.zeros(n)
    else:
        n = max(1, round(rate * duration_s))
        if isinstance(arrival, ConstantArrival):
            times = np.arange(n) / rate
        elif isinstance(arrival, GammaArrival):
            shape = 1.0 / arrival.burstiness
            gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
            gaps[0] = 0.0
            times = np.cumsum(gaps)
        else:
            times = poisson_arrivals(n, rate, rng)
    shares = np.array([c.share for c in classes])
    which = rng.choice(len(classes), size=n, p=shares / shares.sum())
    reqs: list[RequestSpec | None] = [None] * n
    for k, c in enumerate(classes):
        idx = np.flatnonzero(which == k)
        ins = draw_lengths(c.input, 0, len(idx), rng, base_dir)
        outs = draw_lengths(c.output, 1, len(idx), rng, base_dir)
        for i, a, b in zip(idx, ins, outs, strict=True):
            reqs[i] = RequestSpec(int(a), int(b), float(times[i]), c.name)
    return [r for r in reqs if r is not None], concurrency
