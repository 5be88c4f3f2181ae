"""Scoring records against SLOs and summarising them per (sweep step, configuration, class).

Goodput follows DistServe: requests per second that meet every SLO of their class. A failed
request (error, timeout) meets no SLO. Warm-up and cancelled requests are left out. Against a simulated
engine whose clock runs `time_scale` times slower than the wall, every figure (latencies, rates, goodput)
is on the engine's clock, as `parallax run`'s report and the server's metrics are.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from loadgen.records import RequestRecord
from schema.traffic import SLO

ALL_CONFIGS = "(all)"   # the "configuration" of a group that takes every configuration together (no name clash)

def judge(r: RequestRecord, slo: SLO, time_scale: float = 1.0) -> RequestRecord:
    """The (wall-clock) record with `slo_met` judged on the engine's clock."""
    return r.model_copy(update={"slo_met": r.on_engine_clock(time_scale).meets(slo)})


def rescore(records: Iterable[RequestRecord], slos: Mapping[str, SLO], time_scale: float = 1.0
            ) -> list[RequestRecord]:
    """The records with `slo_met` recomputed (classes without an SLO here keep their verdict)."""
    return [judge(r, slos[r.sla_class], time_scale) if r.sla_class in slos else r for r in records]


class Percentiles(BaseModel):
    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: list[float]) -> "Percentiles | None":
        if not values:
            return None
        a = np.asarray(values)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(mean=float(a.mean()), p50=float(p50), p90=float(p90), p99=float(p99))


class GroupSummary(BaseModel):
    """Figures of one (sweep step or load phase, configuration, class); rate_step None = all steps together,
    config ALL_CONFIGS = every configuration together."""

    rate_step: int | None
    phase: str | None = None
    offered_rate: float | None
    concurrency: int | None
    config: str
    sla_class: str
    count: int
    ok: int
    errors: int
    timeouts: int
    duration_s: float
    ttft_s: Percentiles | None
    tpot_s: Percentiles | None
    itl_s: Percentiles | None
    e2e_s: Percentiles | None
    output_tokens_per_s: float
    request_throughput: float
    slo_attainment: float
    slo_target: float | None
    meets_target: bool | None
    goodput: float


class WorkerReport(BaseModel):
    """How one load generator worker ended (runs with `load.workers` > 1 or on Ray)."""

    index: int
    where: str = Field(description="pid N (a process here) or node ID (a Ray actor)")
    status: Literal["finished", "stopped", "failed", "died"]
    detail: str = Field(description="how it ended: exit code, signal, or the error")
    planned: int = Field(description="open-loop requests in its share")
    sent: int
    recorded: int


class LoadSummary(BaseModel):
    """The whole run: per step and overall groups (and, for a phase schedule, per phase and class over every
    configuration), plus how well the generator kept its schedule."""

    groups: list[GroupSummary]
    overall: list[GroupSummary]
    phases: list[GroupSummary] = Field(default_factory=list)
    records: int
    sent: int
    duration_s: float
    step_durations_s: dict[int, float]
    lateness_p50_s: float | None
    lateness_p99_s: float | None
    lateness_max_s: float | None
    interrupted: bool = False
    engine_time_scale: float = 1.0   # wall seconds per engine second: figures are on the engine's clock
    workers: list[WorkerReport] = Field(default_factory=list)

    def row(self, config: str, sla_class: str) -> GroupSummary | None:
        return next((g for g in self.overall if g.config == config and g.sla_class == sla_class), None)


def _group(rs: list[RequestRecord], duration: float, step: int | None, config: str, cls: str,
           slo: SLO | None) -> GroupSummary:
    ok = [r for r in rs if r.status == "ok"]
    met = sum(r.slo_met for r in rs)
    attainment = met / len(rs) if rs else 0.0
    d = max(duration, 1e-9)
    rates = {r.offered_rate for r in rs}
    users = {r.concurrency for r in rs}
    phases = {r.phase for r in rs}
    return GroupSummary(
        rate_step=step, phase=phases.pop() if len(phases) == 1 else None,
        offered_rate=rates.pop() if len(rates) == 1 else None,
        concurrency=users.pop() if len(users) == 1 else None, config=config, sla_class=cls,
        count=len(rs), ok=len(ok), errors=sum(r.status == "error" for r in rs),
        timeouts=sum(r.status == "timeout" for r in rs), duration_s=duration,
        ttft_s=Percentiles.of([r.ttft_s for r in ok if r.ttft_s is not None]),
        tpot_s=Percentiles.of([r.tpot_s for r in ok if r.tpot_s is not None]),
        itl_s=Percentiles.of([g for r in ok for g in r.itl_s]),
        e2e_s=Percentiles.of([r.e2e_s for r in ok if r.e2e_s is not None]),
        output_tokens_per_s=sum(r.output_tokens for r in ok) / d, request_throughput=len(ok) / d,
        slo_attainment=attainment, slo_target=slo.attainment if slo else None,
        meets_target=slo.attained(attainment) if slo and rs else None, goodput=met / d,
    )


def summarize(records: Iterable[RequestRecord], slos: Mapping[str, SLO], step_durations: Mapping[int, float],
              interrupted: bool = False, time_scale: float = 1.0) -> LoadSummary:
    """Summarise (wall-clock) records; `step_durations` gives each sweep step's measured length in wall
    seconds; `time_scale` (wall seconds per engine second) puts the figures on the engine's clock."""
    all_records = list(records)
    scored = [r for r in all_records if r.scored]
    durations = dict(step_durations)
    for r in scored:  # records of a step without a known duration: use their own span
        if r.rate_step not in durations:
            span = [x for x in scored if x.rate_step == r.rate_step]
            durations[r.rate_step] = max(x.scheduled_time + (x.e2e_s or 0) for x in span) - min(
                x.scheduled_time for x in span)
    durations = {step: d / time_scale for step, d in durations.items()}
    scored = [r.on_engine_clock(time_scale) for r in scored]
    by_step: dict[tuple[int, str, str], list[RequestRecord]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[RequestRecord]] = defaultdict(list)
    for r in scored:
        by_step[(r.rate_step, r.config, r.sla_class)].append(r)
        by_pair[(r.config, r.sla_class)].append(r)
    total = sum(durations.values())
    groups = [_group(rs, durations[s], s, c, k, slos.get(k)) for (s, c, k), rs in sorted(by_step.items())]
    overall = [_group(rs, total, None, c, k, slos.get(k)) for (c, k), rs in sorted(by_pair.items())]
    by_phase: dict[tuple[int, str], list[RequestRecord]] = defaultdict(list)
    for r in scored:
        if r.phase is not None:
            by_phase[(r.rate_step, r.sla_class)].append(r)
    phases = [_group(rs, durations[s], s, ALL_CONFIGS, k, slos.get(k)) for (s, k), rs in sorted(by_phase.items())]
    late = [r.lateness_s for r in all_records if r.lateness_s is not None and r.concurrency is None]
    lp = np.percentile(late, [50, 99]) if late else None
    return LoadSummary(
        groups=groups, overall=overall, phases=phases, records=len(all_records),
        sent=sum(r.send_time is not None for r in all_records), duration_s=total,
        step_durations_s=durations,
        lateness_p50_s=float(lp[0]) if lp is not None else None,
        lateness_p99_s=float(lp[1]) if lp is not None else None,
        lateness_max_s=max(late) if late else None, interrupted=interrupted, engine_time_scale=time_scale,
    )
