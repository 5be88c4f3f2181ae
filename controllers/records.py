"""Per-request records of a run folder (the load generator's, read with `loadgen.records`), on the engine's
clock and reduced for the report, and summaries."""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.records import RequestRecord, read_records
from loadgen.summary import judge
from schema.traffic import SLO


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
    request_id: str = ""
    server_tpot_s: float | None = None   # the server's own TPOT (engine clock), likewise


def reduce(r: RequestRecord, time_scale: float = 1.0) -> Rec:
    """The report's view of one (wall-clock) record, on the clock of an engine running `time_scale` wall
    seconds per engine second."""
    e = r.on_engine_clock(time_scale)
    start = r.send_time if r.send_time is not None else r.scheduled_time
    return Rec(
        config=e.config, sla_class=e.sla_class, ok=e.status == "ok", slo_met=e.slo_met and e.status == "ok",
        ttft_s=e.ttft_s, tpot_s=e.tpot_s, e2e_s=e.e2e_s,
        prompt_tokens=e.prompt_tokens or e.planned_prompt_tokens, output_tokens=e.output_tokens,
        start_s=start / time_scale, rate_step=e.rate_step, offered_rate=e.offered_rate,
        server_ttft_s=e.server_ttft_s, request_id=e.request_id, server_tpot_s=e.server_tpot_s,
    )


def measured(records: Iterable[RequestRecord], time_scale: float = 1.0,
             slos: Mapping[str, SLO] | None = None) -> list[Rec]:
    """The scored requests (warm-up requests and requests never sent left out), reduced.

    With a simulated engine whose clock runs `time_scale` times slower than the wall, times are
    converted to the engine's clock (the clock the simulated GPUs live in, and the server-side metrics
    use), rates likewise, and the SLOs are re-judged on those times.
    """
    slos = slos or {}
    return [reduce(judge(r, slos[r.sla_class], time_scale) if r.sla_class in slos else r, time_scale)
            for r in records if r.scored]


def load_records(path: Path, time_scale: float = 1.0, slos: Mapping[str, SLO] | None = None) -> list[Rec]:
    """`measured` of a run folder's records.jsonl (none when it has none)."""
    return measured(read_records(path), time_scale, slos) if path.exists() else []


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


def attainment_interval(met: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of an attainment measured as `met` of `n` requests: the range of true
    attainments that `n` requests cannot tell apart from the measured one."""
    if n == 0:
        return 0.0, 1.0
    p = met / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if met == 0 else centre - half), (1.0 if met == n else centre + half)


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
