"""Per-request records of a run folder (from the load generator), reduced for the report, and summaries."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from controllers.runfolder import read_jsonl
from loadgen.config import SLO


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
    rate_step: int               # index of the sweep step (0 without a sweep)
    offered_rate: float | None   # requests/s of this class the step offered (None: closed loop)
    server_ttft_s: float | None = None   # the server's own TTFT (engine clock), where it reported one


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
        server_ttft_s=row.get("server_ttft_s"),
        rate_step=int(row.get("rate_step") or 0), offered_rate=float(rate) if rate is not None else None,
    )


def load_records(path: Path, time_scale: float = 1.0, slos: Mapping[str, SLO] | None = None) -> list[Rec]:
    """The measured requests: warm-up requests and requests never sent (run interrupted) are left out.

    With a simulated engine whose clock runs `time_scale` times slower than the wall, times are
    converted to the engine's clock (the clock the simulated GPUs live in, and the server-side metrics
    use), rates likewise, and the SLOs are re-judged on those times.
    """
    recs = [from_row(r) for r in read_jsonl(path) if not r.get("warmup") and r.get("status") != "cancelled"]
    if time_scale == 1.0:
        return recs
    return [to_engine_clock(r, time_scale, slos.get(r.sla_class) if slos else None) for r in recs]


def _div(x: float | None, k: float) -> float | None:
    return None if x is None else x / k


def to_engine_clock(r: Rec, k: float, slo: SLO | None) -> Rec:
    ttft, tpot, e2e = _div(r.ttft_s, k), _div(r.tpot_s, k), _div(r.e2e_s, k)
    met = r.slo_met if slo is None else r.ok and slo.met(ttft, tpot, e2e)
    return replace(r, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e, start_s=r.start_s / k, slo_met=met,
                   offered_rate=None if r.offered_rate is None else r.offered_rate * k)


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
