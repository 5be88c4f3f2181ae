"""Per-request records of a run folder (from the load generator), reduced for the report, and summaries."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controllers.runfolder import read_jsonl


@dataclass(frozen=True)
class Rec:
    config: str
    sla_class: str
    ok: bool
    slo_met: bool
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None
    prompt_tokens: int
    output_tokens: int
    start_s: float
    offered_rate: float | None   # the sweep step's rate (None without a sweep)


def from_row(row: Mapping[str, Any]) -> Rec:
    """One JSONL record of the load generator (loadgen.records.RequestRecord)."""
    ok = row.get("status") == "ok"
    start = row.get("send_time") if row.get("send_time") is not None else row.get("scheduled_time")
    rate = row.get("offered_rate")
    return Rec(
        config=str(row.get("config") or "?"), sla_class=str(row.get("sla_class") or "?"), ok=ok,
        slo_met=bool(row.get("slo_met")) and ok, ttft_s=row.get("ttft_s"), tpot_s=row.get("tpot_s"),
        e2e_s=row.get("e2e_s"),
        prompt_tokens=int(row.get("prompt_tokens") or row.get("planned_prompt_tokens") or 0),
        output_tokens=int(row.get("output_tokens") or 0), start_s=float(start or 0.0),
        offered_rate=float(rate) if rate is not None else None,
    )


def load_records(path: Path) -> list[Rec]:
    """The measured requests: warm-up requests and requests never sent (run interrupted) are left out."""
    return [from_row(r) for r in read_jsonl(path)
            if not r.get("warmup") and r.get("status") != "cancelled"]


@dataclass(frozen=True)
class Summary:
    """Client-side figures of one group of requests (e.g. one config × class × rate)."""

    n: int
    errors: int
    attainment: float
    goodput: float        # requests/s meeting every SLO
    output_tps: float
    ttft_p90: float | None
    tpot_p90: float | None
    e2e_p90: float | None


def _p(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(recs: Iterable[Rec], duration_s: float | None = None) -> Summary:
    rs = list(recs)
    if not rs:
        return Summary(0, 0, 0.0, 0.0, 0.0, None, None, None)
    if duration_s is None:
        ends = [r.start_s + (r.e2e_s or 0.0) for r in rs]
        duration_s = max(ends) - min(r.start_s for r in rs)
    dur = max(duration_s, 1e-9)
    ok = [r for r in rs if r.ok]
    met = sum(r.slo_met for r in rs)
    return Summary(
        n=len(rs), errors=len(rs) - len(ok), attainment=met / len(rs), goodput=met / dur,
        output_tps=sum(r.output_tokens for r in ok) / dur,
        ttft_p90=_p([r.ttft_s for r in ok if r.ttft_s is not None], 90),
        tpot_p90=_p([r.tpot_s for r in ok if r.tpot_s is not None], 90),
        e2e_p90=_p([r.e2e_s for r in ok if r.e2e_s is not None], 90),
    )


def group(recs: Iterable[Rec], *keys: str) -> dict[tuple[Any, ...], list[Rec]]:
    out: dict[tuple[Any, ...], list[Rec]] = {}
    for r in recs:
        out.setdefault(tuple(getattr(r, k) for k in keys), []).append(r)
    return out
