"""What each fault of a run cost each configuration: the report's "Faults" section, computed from the run
folder alone (the request records, faults.jsonl and the controller's weights.csv), pure.

For each fault, three windows of wall time: *during* from the action to the end of its effect (`ended_at`:
replacement running, speed restored, …; the end of the load when it never ended), *before* and *after* as
long as the controller's window (`window_s`), cut short by the load's start and end and by other faults'
effects. Per (configuration, class) and window: goodput (requests that met their SLO, judged on the engine's
clock, per second of the engine's clock), attainment (met ÷ every scored request) and the p90 of the ok
requests' TPOT (engine clock: what a slowed GPU shows first), requests attributed to the window they were
sent in.

For the configuration a fault hits (its failures include those no response named a configuration for: a
request held for a configuration without a running replica times out without one):
- detect: the first failure a client saw after the action (a request's end time) or Serve noticing the
  replica gone, whichever came first;
- drain: the controller's routing moved every class away from it (none while other replicas serve: Serve
  routes around a dead replica itself);
- recover: the replacement runs, the routing is back where it was drained from, and the replacement has
  served a request (a slowed GPU: back to speed);
- lost: good requests the configuration did not deliver while the fault lasted, against its goodput before
  ((before − during) × the fault's length), its blast radius in requests.
All three times are wall seconds after the action: Serve's and the controller's own times on this machine.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controllers.faults.record import FaultRecord
from loadgen.records import UNKNOWN_CONFIG, RequestRecord
from schema.scenario import Scenario

WINDOWS = ("before", "during", "after")


@dataclass(frozen=True)
class Window:
    name: str
    start: float   # Unix time
    end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    def holds(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class Figures:
    """One (configuration, class) in one window."""

    requests: int
    met: int
    goodput: float | None        # requests/s that met the SLO, engine clock; None: an empty window
    attainment: float | None     # met / requests; None without requests
    tpot_p90: float | None       # p90 of the ok requests' TPOT (client, engine clock, s); None without one


@dataclass(frozen=True)
class FailedRequest:
    request_id: str
    config: str
    sla_class: str
    status: str
    http_status: int | None
    error: str | None
    sent_at: float               # Unix time
    failed_at: float             # Unix time, as far as the record tells


@dataclass
class FaultImpact:
    """One fault and what it cost."""

    record: FaultRecord
    windows: dict[str, Window]
    figures: dict[tuple[str, str, str], Figures]          # (config, class, window) -> figures
    failed: list[FailedRequest] = field(default_factory=list)
    detect_s: float | None = None
    drain_s: float | None = None
    recover_s: float | None = None
    lost: dict[str, float] = field(default_factory=dict)  # config -> good requests lost while it lasted
    tpot_p90: dict[tuple[str, str], float | None] = field(default_factory=dict)   # (config, window), every class

    @property
    def hit(self) -> str | None:
        return self.record.fault.target

    def config_goodput(self, config: str, window: str) -> float | None:
        """Goodput of every class of `config` in `window` (None when the window is empty)."""
        values = [f.goodput for (c, _, w), f in self.figures.items() if c == config and w == window]
        known = [v for v in values if v is not None]
        return sum(known) if known else None


def load_span(records: Sequence[RequestRecord]) -> tuple[float, float]:
    """When the load ran: its first planned request and its last send (Unix times)."""
    start = min((r.scheduled_time for r in records), default=0.0)
    end = max((r.send_time or r.scheduled_time for r in records), default=start)
    return start, end


def windows(rec: FaultRecord, others: Sequence[FaultRecord], span: tuple[float, float], window_s: float
            ) -> dict[str, Window]:
    """Before, during and after one fault (see the module's docstring)."""
    assert rec.applied_at is not None
    start, end = span
    applied = rec.applied_at
    ended = min(rec.ended_at if rec.ended_at is not None else end, end)
    earlier = [o.ended_at for o in others if o is not rec and o.ended_at is not None and o.ended_at <= applied]
    later = [o.applied_at for o in others if o is not rec and o.applied_at is not None and o.applied_at >= ended]
    return {"before": Window("before", max([start, applied - window_s, *earlier]), applied),
            "during": Window("during", applied, max(ended, applied)),
            "after": Window("after", ended, max(ended, min([end, ended + window_s, *later])))}


def failed_at(r: RequestRecord, applied: float, timeout_s: float) -> float:
    """When a failed request failed: its record's end time; without one (a load generator worker that died
    first, or an older run folder), as far as the record tells: a timeout at its deadline, an error no earlier
    than the fault (a stream the fault cut broke when it came) and no later than its deadline."""
    if r.end_time is not None:
        return r.end_time
    sent = r.send_time if r.send_time is not None else r.scheduled_time
    return sent + timeout_s if r.status == "timeout" else min(max(sent, applied), sent + timeout_s)


def impact(rec: FaultRecord, others: Sequence[FaultRecord], records: Sequence[RequestRecord], scenario: Scenario,
           weights: Sequence[Mapping[str, Any]], window_s: float | None = None) -> FaultImpact | None:
    """What one applied fault cost (None for a fault that was not applied). `records`: the run's, warm-up left
    out, judged on the engine's clock already (loadgen.summary.rescore); cancelled ones count only as failures
    (a killed load generator worker's requests)."""
    if not rec.ok or rec.applied_at is None:
        return None
    scale = scenario.engine.clock_scale
    w = windows(rec, others, load_span(records), window_s if window_s is not None else scenario.controller.window_s)
    figures: dict[tuple[str, str, str], Figures] = {}
    tpot: dict[tuple[str, str], float | None] = {}
    scored = [r for r in records if r.scored]
    for c in scenario.configurations:
        for name, win in w.items():
            inside = [r for r in scored if r.config == c.name and win.holds(r.send_time or r.scheduled_time)]
            tpot[(c.name, name)] = _tpot_p90(inside, scale)
            engine_s = win.seconds / scale
            for k in scenario.classes:
                mine = [r for r in inside if r.sla_class == k.name]
                met = sum(r.slo_met for r in mine)
                figures[(c.name, k.name, name)] = Figures(len(mine), met, met / engine_s if engine_s > 0 else None,
                                                          met / len(mine) if mine else None, _tpot_p90(mine, scale))
    out = FaultImpact(rec, w, figures, tpot_p90=tpot)
    applied = rec.applied_at
    during = w["during"]
    for c in scenario.configurations:
        before, now = out.config_goodput(c.name, "before"), out.config_goodput(c.name, "during")
        if before is not None and now is not None:
            out.lost[c.name] = (before - now) * during.seconds / scale
    timeout_s = scenario.load.timeout_s
    hit = rec.fault.target
    hit_or_unknown = (hit, UNKNOWN_CONFIG)   # no response named a configuration: held for a dead one, say
    # a fault on a configuration fails requests (error, timeout); a cancelled one is the load generator's own
    out.failed = sorted((FailedRequest(r.request_id, r.config, r.sla_class, r.status, r.http_status, r.error,
                                       r.send_time or r.scheduled_time, t)
                         for r in records if r.status != "ok"
                         and (hit is None or (r.config in hit_or_unknown and r.status != "cancelled"))
                         and applied <= (t := failed_at(r, applied, timeout_s)) < during.end + timeout_s),
                        key=lambda f: (f.failed_at, f.sent_at))
    if hit is not None:
        _hit_times(out, hit, records, weights)
    else:
        out.recover_s = None if rec.ended_at is None else rec.ended_at - applied
    return out


def _tpot_p90(records: Sequence[RequestRecord], scale: float) -> float | None:
    values = [r.tpot_s / scale for r in records if r.status == "ok" and r.tpot_s is not None]
    return float(np.percentile(values, 90)) if values else None


def _hit_times(out: FaultImpact, config: str, records: Sequence[RequestRecord],
               weights: Sequence[Mapping[str, Any]]) -> None:
    """Detect, drain and recover for the configuration the fault hit."""
    rec = out.record
    applied = rec.applied_at
    assert applied is not None
    seen = [t for t in (min((f.failed_at for f in out.failed), default=None), rec.phase_at("noticed"))
            if t is not None]
    out.detect_s = min(seen) - applied if seen else None
    drained, restored = _routing_away(config, weights, applied)
    out.drain_s = None if drained is None else drained - applied
    if rec.fault.action == "slow_gpu":
        out.recover_s = None if rec.ended_at is None else rec.ended_at - applied
        return
    served = [r.send_time for r in records if r.replica is not None and r.replica == rec.replacement
              and r.status == "ok" and r.send_time is not None]
    steps = [rec.ended_at, min(served, default=None)] + ([restored] if drained is not None else [])
    out.recover_s = None if any(t is None for t in steps) else max(t for t in steps if t is not None) - applied


def _routing_away(config: str, weights: Sequence[Mapping[str, Any]], applied: float
                  ) -> tuple[float | None, float | None]:
    """When, after `applied`, the routing first sent no class to `config` (having sent some before), and when it
    sent some again after that (Unix times; None: not seen)."""
    times: dict[float, float] = {}
    for row in weights:
        if str(row["config"]) == config:
            t = float(row["time"])
            times[t] = times.get(t, 0.0) + float(row["weight"])
    routed_before = any(w > 0 for t, w in times.items() if t <= applied)
    drained = next((t for t in sorted(times) if t > applied and times[t] == 0), None) if routed_before else None
    if drained is None:
        return None, None
    return drained, next((t for t in sorted(times) if t > drained and times[t] > 0), None)


def impacts(faults: Sequence[FaultRecord], records: Sequence[RequestRecord], scenario: Scenario,
            weights: Sequence[Mapping[str, Any]], window_s: float | None = None) -> list[FaultImpact]:
    """Every applied fault's impact, in the scenario's order."""
    out = [impact(f, faults, records, scenario, weights, window_s) for f in faults]
    return [i for i in out if i is not None]


def timeline(records: Sequence[RequestRecord], configs: Sequence[str], scale: float, bin_s: float
             ) -> tuple[list[float], dict[str, list[float]]]:
    """Goodput per configuration (every class, engine clock) in bins of `bin_s` wall seconds from the load's
    start, by send time: (bin starts in seconds since the start, config -> goodput per bin)."""
    start, end = load_span(records)
    n = max(1, int((end - start) // bin_s) + 1)
    met = {c: [0] * n for c in configs}
    for r in records:
        if r.slo_met and r.config in met:
            i = int(((r.send_time or r.scheduled_time) - start) // bin_s)
            if 0 <= i < n:
                met[r.config][i] += 1
    return [i * bin_s for i in range(n)], {c: [k * scale / bin_s for k in ks] for c, ks in met.items()}
