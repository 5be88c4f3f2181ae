"""Samplers for request lengths (input and output tokens) from the scenario's length distributions."""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from loadgen.files import read_lengths, resolve_path
from schema.traffic import (
    PRESETS,
    EmpiricalLength,
    FixedLength,
    LognormalLength,
    NormalLength,
    PresetLength,
    TrafficClass,
    UniformLength,
)

Dist = FixedLength | UniformLength | NormalLength | LognormalLength | EmpiricalLength | PresetLength
Sampler = Callable[[np.random.Generator], int]


def _clip(x: float, lo: int, hi: int | None) -> int:
    n = max(lo, round(x))
    return min(n, hi) if hi is not None else n


def make_sampler(dist: Dist, which: int, base_dir: Path | None = None) -> Sampler:
    """A function drawing one length; `which` is 0 for input, 1 for output (used by presets)."""
    match dist:
        case FixedLength(value=v):
            return lambda rng: v
        case UniformLength():
            u = dist
            return lambda rng: int(rng.integers(u.min, u.max + 1))
        case NormalLength(mean=m, std=s, min=lo, max=hi):
            return lambda rng: _clip(rng.normal(m, s), lo, hi)
        case LognormalLength(mean=m, sigma=s, min=lo, max=hi):
            mu = math.log(m) - s * s / 2  # so that E[X] = m
            return lambda rng: _clip(rng.lognormal(mu, s), lo, hi)
        case PresetLength(name=name):
            value = PRESETS[name][which]
            return lambda rng: value
        case EmpiricalLength(path=p, column=col):
            values = np.array(read_lengths(resolve_path(p, base_dir), col))
            return lambda rng: int(values[rng.integers(len(values))])
    raise AssertionError(dist)


def mean_length(dist: FixedLength | UniformLength | NormalLength | LognormalLength | EmpiricalLength
                | PresetLength, which: int, base_dir: Path | None = None) -> float:
    """Mean of one length distribution (`which`: 0 input, 1 output); LoadError for a bad lengths file."""
    match dist:
        case FixedLength(value=v):
            return float(v)
        case UniformLength(min=lo, max=hi):
            return (lo + hi) / 2
        case NormalLength(mean=m) | LognormalLength(mean=m):
            return float(m)
        case PresetLength(name=n):
            return float(PRESETS[n][which])
        case EmpiricalLength(path=p, column=col):
            values = read_lengths(resolve_path(p, base_dir), col)
            return sum(values) / len(values)
    raise AssertionError(dist)


def mean_lengths(tc: TrafficClass, base_dir: Path | None = None) -> tuple[float, float]:
    """Mean input and output tokens of a class, where its distributions state them (lengths files are
    read, relative paths also from `base_dir`, the scenario's folder)."""
    return mean_length(tc.input, 0, base_dir), mean_length(tc.output, 1, base_dir)


def with_mean(dist: Dist, which: int, mean: float, base_dir: Path | None = None) -> Dist:
    """`dist` with every length scaled so that its mean is `mean` (its spread relative to the mean kept; a preset
    becomes that fixed length). A lengths file cannot be rescaled: an empirical distribution is returned as is."""
    if isinstance(dist, EmpiricalLength):
        return dist
    f = mean / mean_length(dist, which, base_dir)

    def n(x: int) -> int:
        return max(1, round(x * f))
    match dist:
        case FixedLength() | PresetLength():
            return FixedLength(value=max(1, round(mean)))
        case UniformLength(min=lo, max=hi):
            return UniformLength(min=n(lo), max=n(hi))
        case NormalLength(std=sd, min=lo, max=hi):
            return NormalLength(mean=mean, std=sd * f, min=n(lo), max=None if hi is None else n(hi))
        case LognormalLength(sigma=sg, min=lo, max=hi):
            return LognormalLength(mean=mean, sigma=sg, min=n(lo), max=None if hi is None else n(hi))
    raise AssertionError(dist)


def with_means(tc: TrafficClass, prompt: float | None, output: float | None, tolerance: float,
               base_dir: Path | None = None) -> TrafficClass:
    """The class with its input and output lengths at the given means where one is given and differs from the
    class's own by more than `tolerance` (relative); within it the class's own distribution is kept."""
    update: dict[str, Dist] = {}
    for field, which, mean in (("input", 0, prompt), ("output", 1, output)):
        dist = getattr(tc, field)
        if mean is not None and mean > 0 and abs(mean / mean_length(dist, which, base_dir) - 1) > tolerance:
            update[field] = with_mean(dist, which, mean, base_dir)
    return tc.model_copy(update=update) if update else tc


# A distribution without an upper bound (normal, lognormal without `max`) is taken to its 99.9th percentile:
# the longest of a thousand requests. z of the standard normal at 0.999:
_Z_999 = 3.090


def longest_length(dist: Dist, which: int, base_dir: Path | None = None) -> int:
    """The longest length a distribution sends (`which`: 0 input, 1 output): its upper bound, else the 99.9th
    percentile of an unbounded normal or lognormal; LoadError for a bad lengths file."""
    match dist:
        case FixedLength(value=v):
            return v
        case UniformLength(max=hi):
            return hi
        case NormalLength(mean=m, std=s, min=lo, max=hi):
            return hi if hi is not None else _clip(m + _Z_999 * s, lo, None)
        case LognormalLength(mean=m, sigma=s, min=lo, max=hi):
            return hi if hi is not None else _clip(math.exp(math.log(m) - s * s / 2 + _Z_999 * s), lo, None)
        case PresetLength(name=n):
            return PRESETS[n][which]
        case EmpiricalLength(path=p, column=col):
            return max(read_lengths(resolve_path(p, base_dir), col))
    raise AssertionError(dist)
