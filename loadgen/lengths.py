"""Samplers for request lengths (input and output tokens) from the scenario's length distributions."""

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from loadgen.config import (
    PRESETS,
    EmpiricalLength,
    FixedLength,
    LognormalLength,
    NormalLength,
    PresetLength,
    UniformLength,
)
from loadgen.errors import LoadError

Dist = FixedLength | UniformLength | NormalLength | LognormalLength | EmpiricalLength | PresetLength
Sampler = Callable[[np.random.Generator], int]


def resolve_path(path: Path, base_dir: Path | None) -> Path:
    """A relative path is looked up as given, then next to the scenario file."""
    if path.is_absolute() or base_dir is None or path.exists():
        return path
    return base_dir / path


def read_lengths(path: Path, column: str | None = None) -> list[int]:
    """Integers from a file: one per line, or a column of a CSV (header row) or JSONL file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise LoadError(f"{path}: cannot read lengths file ({e.strerror}); check the path") from None
    where = str(path)
    raw: list[tuple[int, object]] = []
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        col = column or (reader.fieldnames[0] if reader.fieldnames else None)
        if col is None or col not in (reader.fieldnames or []):
            raise LoadError(f"{where}: column {col!r} not in the header {reader.fieldnames}; set `column`")
        raw = [(i + 2, row[col]) for i, row in enumerate(reader)]
    elif path.suffix == ".jsonl":
        if column is None:
            raise LoadError(f"{where}: a JSONL lengths file needs `column` (the key holding the length)")
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    raw.append((i, json.loads(line)[column]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise LoadError(f"{where}: row {i}: no {column!r} value in this JSON line") from None
    else:
        raw = [(i, tok) for i, line in enumerate(text.splitlines(), start=1) for tok in line.split()]
    values = []
    for row, v in raw:
        try:
            n = int(float(str(v)))
        except ValueError:
            raise LoadError(f"{where}: row {row}: {v!r} is not a number of tokens") from None
        if n <= 0:
            raise LoadError(f"{where}: row {row}: length {n} must be > 0")
        values.append(n)
    if not values:
        raise LoadError(f"{where}: no lengths in the file")
    return values


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
