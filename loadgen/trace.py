"""Timestamped request traces (CSV with a header row, or JSONL) for replay.

Columns (case-insensitive; the Azure LLM inference trace names work as they are):
- time: `timestamp` | `time` | `arrival_time` — seconds (number) or an ISO date-time;
- input tokens: `input_tokens` | `prompt_tokens` | `contexttokens`;
- output tokens: `output_tokens` | `generated_tokens` | `generatedtokens` | `max_tokens`;
- optional class: `class` | `sla_class`.
Times are made relative to the first row; rows must be in time order.
"""

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loadgen.errors import LoadError

_ALIASES = {
    "time": ("timestamp", "time", "arrival_time"),
    "input": ("input_tokens", "prompt_tokens", "contexttokens"),
    "output": ("output_tokens", "generated_tokens", "generatedtokens", "max_tokens"),
    "class": ("class", "sla_class"),
}


@dataclass(frozen=True)
class TraceRow:
    at_s: float
    input_tokens: int
    output_tokens: int
    sla_class: str | None


def _rows(path: Path, text: str) -> list[tuple[int, dict[str, object]]]:
    if path.suffix in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise LoadError(f"{path}: row {i}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise LoadError(f"{path}: row {i}: expected a JSON object")
            rows.append((i, obj))
        return rows
    reader = csv.DictReader(text.splitlines())
    return [(i + 2, dict(row)) for i, row in enumerate(reader)]  # row 1 is the header


def _column(path: Path, keys: list[str], which: str, required: bool) -> str | None:
    lower = {k.lower(): k for k in keys}
    for alias in _ALIASES[which]:
        if alias in lower:
            return lower[alias]
    if required:
        raise LoadError(f"{path}: no {which} column; name one of {', '.join(_ALIASES[which])} "
                        f"(found: {', '.join(keys) or 'none'})")
    return None


def _time(v: object) -> float:
    if isinstance(v, int | float):
        return float(v)
    s = str(v).strip()
    try:
        return float(s)
    except ValueError:
        return datetime.fromisoformat(s).timestamp()


def _tokens(v: object) -> int:
    n = int(float(str(v)))
    if n <= 0:
        raise ValueError
    return n


def read_trace(path: Path) -> list[TraceRow]:
    """Parse a trace file; every bad row is reported by its row number and field."""
    try:
        text = path.read_text()
    except OSError as e:
        raise LoadError(f"{path}: cannot read trace ({e.strerror}); check the arrival's path") from None
    rows = _rows(path, text)
    if not rows:
        raise LoadError(f"{path}: the trace has no rows")
    keys = list(rows[0][1].keys())
    tcol = _column(path, keys, "time", True)
    icol = _column(path, keys, "input", True)
    ocol = _column(path, keys, "output", True)
    ccol = _column(path, keys, "class", False)
    assert tcol and icol and ocol
    out: list[TraceRow] = []
    t0 = prev = None
    for row_no, row in rows:
        parsed: dict[str, object] = {}
        for col, conv, what in ((tcol, _time, "a time in seconds or an ISO date-time"),
                                (icol, _tokens, "a positive whole number of tokens"),
                                (ocol, _tokens, "a positive whole number of tokens")):
            value = row.get(col)
            if value is None or value == "":
                raise LoadError(f"{path}: row {row_no}: field {col!r} is missing")
            try:
                parsed[col] = conv(value)
            except (ValueError, TypeError):
                raise LoadError(f"{path}: row {row_no}: field {col!r}: {value!r} is not {what}") from None
        t = float(parsed[tcol])  # type: ignore[arg-type]
        t0 = t if t0 is None else t0
        if prev is not None and t < prev:
            raise LoadError(f"{path}: row {row_no}: field {tcol!r}: time goes backwards; sort the trace by time")
        prev = t
        cls = row.get(ccol) if ccol else None
        out.append(TraceRow(t - t0, int(parsed[icol]), int(parsed[ocol]),  # type: ignore[call-overload]
                            str(cls) if cls not in (None, "") else None))
    return out
