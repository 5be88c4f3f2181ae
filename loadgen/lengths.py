"""Samplers for request lengths (input and output tokens) from the scenario's length distributions."""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from schema.traffic import (
    PRESETS,
    EmpiricalLength,
    FixedLength,
    LognormalLength,
    NormalLength,
    PresetLength,
    UniformLength,
)
from loadgen.files import read_lengths, resolve_path

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
