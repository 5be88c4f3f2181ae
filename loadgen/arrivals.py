"""Open-loop arrival processes: one registry of strategies, looked up by the config's `kind`.

Each strategy turns an arrival config into the send times (seconds from the start of a step) of
every request in a step of `duration_s`. Closed-loop concurrency and trace replay are not time
generators of this kind; the runner handles them (see `is_open_loop`).
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from schema.traffic import (
    ClosedLoop,
    ConstantArrival,
    GammaArrival,
    PoissonArrival,
    RampArrival,
    StepArrival,
    TraceArrival,
)

ArrivalConfig = PoissonArrival | GammaArrival | ConstantArrival | ClosedLoop | RampArrival | StepArrival | TraceArrival
TimesFn = Callable[[Any, float, np.random.Generator], np.ndarray]

_STRATEGIES: dict[str, TimesFn] = {}

# Kinds whose rate (or concurrency) a sweep (`load.rates`) replaces.
SWEEPABLE = ("poisson", "gamma", "constant", "closed")


def strategy(kind: str) -> Callable[[TimesFn], TimesFn]:
    def register(fn: TimesFn) -> TimesFn:
        _STRATEGIES[kind] = fn
        return fn
    return register


def is_open_loop(arrival: ArrivalConfig) -> bool:
    return arrival.kind in _STRATEGIES


def arrival_times(arrival: ArrivalConfig, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Send times in [0, duration_s), sorted."""
    times = _STRATEGIES[arrival.kind](arrival, duration_s, rng)
    return times[times < duration_s]


def with_rate(arrival: ArrivalConfig, rate: float) -> ArrivalConfig:
    """The same process at another rate (or concurrency, for closed loops): one step of a sweep."""
    if isinstance(arrival, ClosedLoop):
        return arrival.model_copy(update={"concurrency": max(1, round(rate))})
    if arrival.kind not in SWEEPABLE:
        raise ValueError(f"a {arrival.kind} arrival has no single rate to sweep")
    return arrival.model_copy(update={"rate": rate})


def mean_rate(arrival: ArrivalConfig, duration_s: float) -> float | None:
    """Requests per second the process offers on average (None for closed loops and traces)."""
    match arrival:
        case PoissonArrival(rate=r) | GammaArrival(rate=r) | ConstantArrival(rate=r):
            return r
        case RampArrival(start_rate=a, end_rate=b):
            return (a + b) / 2
        case StepArrival(steps=steps):
            return _step_mean(steps, duration_s)
    return None


def _renewal(gaps: Callable[[int], np.ndarray], rate: float, duration_s: float) -> np.ndarray:
    """Cumulative sums of inter-arrival gaps, drawn in blocks until they pass `duration_s`."""
    out: list[np.ndarray] = []
    t = 0.0
    block = max(16, int(rate * duration_s * 1.2) + 16)
    while t < duration_s:
        times = t + np.cumsum(gaps(block))
        out.append(times)
        t = float(times[-1])
    return np.concatenate(out)


@strategy("poisson")
def _poisson(a: PoissonArrival, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    return _renewal(lambda n: rng.exponential(1 / a.rate, n), a.rate, duration_s)


@strategy("gamma")
def _gamma(a: GammaArrival, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    # Gamma gaps with shape k have squared coefficient of variation 1/k: burstiness = 1/k.
    shape = 1 / a.burstiness
    return _renewal(lambda n: rng.gamma(shape, 1 / (a.rate * shape), n), a.rate, duration_s)


@strategy("constant")
def _constant(a: ConstantArrival, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    return np.arange(0.0, duration_s, 1 / a.rate)


def _thinned(rate_at: Callable[[np.ndarray], np.ndarray], peak: float, duration_s: float,
             rng: np.random.Generator) -> np.ndarray:
    """Non-homogeneous Poisson arrivals by thinning a homogeneous process at the peak rate."""
    candidates = _renewal(lambda n: rng.exponential(1 / peak, n), peak, duration_s)
    candidates = candidates[candidates < duration_s]
    keep = rng.random(len(candidates)) < rate_at(candidates) / peak
    return candidates[keep]


@strategy("ramp")
def _ramp(a: RampArrival, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    def rate_at(t: np.ndarray) -> np.ndarray:
        return a.start_rate + (a.end_rate - a.start_rate) * t / duration_s
    return _thinned(rate_at, max(a.start_rate, a.end_rate), duration_s, rng)


@strategy("steps")
def _steps(a: StepArrival, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    steps = sorted(a.steps, key=lambda s: s.at_s)
    starts = np.array([s.at_s for s in steps])
    rates = np.array([0.0] + [s.rate for s in steps])  # no traffic before the first step

    def rate_at(t: np.ndarray) -> np.ndarray:
        return rates[np.searchsorted(starts, t, side="right")]
    return _thinned(rate_at, float(rates.max()), duration_s, rng)


def _step_mean(steps: list, duration_s: float) -> float:
    steps = sorted(steps, key=lambda s: s.at_s)
    total = 0.0
    for i, s in enumerate(steps):
        end = steps[i + 1].at_s if i + 1 < len(steps) else duration_s
        total += s.rate * max(0.0, min(end, duration_s) - min(s.at_s, duration_s))
    return total / duration_s
