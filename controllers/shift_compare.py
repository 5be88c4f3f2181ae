"""A run of shifting traffic against two offline references, on the same requests (`parallax compare-shift`).

The requests the run sent (send time, class, prompt and output lengths, the phase that sent them) are replayed
through the offline simulator on
- **the best static deployment** for the whole schedule: the planner's answer for `Scenario.schedule_mix()`,
  every request of the run on it, one engine from start to end;
- **the per-phase oracle**: the planner's answer for each phase's mix (`Scenario.phase_mix`), each phase's
  requests on its own answer from fresh engines (moves free and instant).
Each class goes wholly to its pool; a request meets its class's SLO as `SLO.met` judges it. Goodput per phase:
requests sent in the phase that met their SLO ÷ the phase's length; overall, all of them ÷ the schedule's length
(engine clock). The live run's own goodput is counted the same way from its records.
Requests never sent (an interrupted run) are left out of all three; warm-up requests load the replayed engines
but are not counted.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from controllers.plan.candidates import Pool
from controllers.plan.parallel import Runner
from controllers.plan.search import PlanOptions, search
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.resolve import Resolved
from loadgen.records import RequestRecord
from loadgen.summary import rescore
from schema.deployment import ParallelConfig
from schema.scenario import Scenario

SHIFT_COMPARE_JSON = "shift_compare.json"

Planner = Callable[[Resolved, Runner], tuple[Pool, ...]]


def best_pools(resolved: Resolved, runner: Runner) -> tuple[Pool, ...]:
    """`parallax plan`'s best aggregated deployment for `resolved`'s traffic on the repartition policy's GPUs: the
    splits the policy itself can move between (it re-plans TP×PP pools, never a disaggregated one)."""
    gpus = resolved.scenario.controller.repartition.gpus
    return search(resolved, PlanOptions(gpus=gpus, disaggregated=False), runner).ranked[0].candidate.pools


@dataclass(frozen=True)
class Sent:
    """One request as the run sent it (engine clock, seconds from the first request sent)."""

    phase: int
    sla_class: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    counted: bool          # not a warm-up request
    met_live: bool         # it met its class's SLO in the run


@dataclass(frozen=True)
class ShiftComparison:
    phases: list[str]
    durations_s: list[float]                # engine clock
    live: list[float]                       # goodput per phase, req/s (engine clock)
    static: list[float]
    oracle: list[float]
    static_deployment: str
    oracle_deployments: list[str]

    def overall(self, per_phase: Sequence[float]) -> float:
        return sum(g * d for g, d in zip(per_phase, self.durations_s, strict=True)) / sum(self.durations_s)


def sent_requests(records: Sequence[RequestRecord], scenario: Scenario) -> list[Sent]:
    """The requests the run sent, in send order (`slo_met` as the records have it: rescore them first); the phase
    from each record's `phase` (by name)."""
    names = scenario.load.phase_names
    k = scenario.engine.clock_scale
    sent = sorted((r for r in records if r.send_time is not None and r.status != "cancelled"),
                  key=lambda r: r.send_time or 0.0)
    if not sent:
        return []
    t0 = sent[0].send_time or 0.0
    return [Sent(names.index(r.phase) if r.phase in names else r.rate_step, r.sla_class,
                 ((r.send_time or t0) - t0) / k, r.prompt_tokens or r.planned_prompt_tokens,
                 r.output_tokens if r.status == "ok" and r.output_tokens else r.max_tokens, not r.warmup,
                 r.status == "ok" and r.slo_met)
            for r in sent]


def replay_met(resolved: Resolved, pools: Sequence[Pool], sent: Sequence[Sent]) -> list[bool]:
    """Per request: whether it met its class's SLO replayed on `pools` (each class on its pool; a class no pool
    serves misses)."""
    s = resolved.scenario
    slos = {c.name: c.slo for c in s.classes}
    met = [False] * len(sent)
    for i, p in enumerate(pools):
        mine = [j for j, r in enumerate(sent) if r.sla_class in p.classes]
        if not mine:
            continue
        t0 = sent[mine[0]].arrival_s
        specs = [RequestSpec(sent[j].prompt_tokens, max(1, sent[j].output_tokens), sent[j].arrival_s - t0,
                             sent[j].sla_class) for j in mine]
        cfg = ParallelConfig(name=f"pool{i}", tp=p.shape.tp, pp=p.shape.pp, replicas=p.replicas,
                             spread_pp_over_nodes=p.shape.gpus > s.hardware.gpus_per_node)
        factory = ReplicaFactory.for_deployment(s, cfg, resolved.model, resolved.gpu)
        for j, rec in zip(mine, run_offline(factory, specs, replicas=p.replicas).records, strict=True):
            met[j] = slos[rec.tag].met(rec.ttft, rec.tpot if rec.output_len > 1 else None, rec.e2e)
    return met


def _per_phase(sent: Sequence[Sent], met: Sequence[bool], durations: Sequence[float]) -> list[float]:
    good = [0] * len(durations)
    for r, ok in zip(sent, met, strict=True):
        if ok and r.counted and 0 <= r.phase < len(good):
            good[r.phase] += 1
    return [g / d for g, d in zip(good, durations, strict=True)]


def compare_shift(resolved: Resolved, records: Sequence[RequestRecord], runner: Runner,
                  plan: Planner = best_pools) -> ShiftComparison:
    """The live run's goodput per phase beside the best static deployment's and the per-phase oracle's
    (module docstring). ValueError for a scenario without load.phases."""
    s = resolved.scenario
    if not s.load.phases:
        raise ValueError("load.phases: the comparison is per phase of a schedule; this scenario has none")
    k = s.engine.clock_scale
    durations = [p.duration_s / k for p in s.load.phases]
    sent = sent_requests(rescore(records, {c.name: c.slo for c in s.classes}, k), s)

    def on(scenario: Scenario) -> Resolved:
        return Resolved(scenario, resolved.model, resolved.gpu, resolved.source)

    static = plan(on(s.schedule_mix()), runner)
    static_met = replay_met(resolved, static, sent)
    oracle_pools = [plan(on(s.phase_mix(i)), runner) for i in range(len(s.load.phases))]
    oracle_met = [False] * len(sent)
    for i, pools in enumerate(oracle_pools):
        idx = [j for j, r in enumerate(sent) if r.phase == i]
        for j, ok in zip(idx, replay_met(resolved, pools, [sent[j] for j in idx]), strict=True):
            oracle_met[j] = ok
    return ShiftComparison(s.load.phase_names, durations, _per_phase(sent, [r.met_live for r in sent], durations),
                           _per_phase(sent, static_met, durations), _per_phase(sent, oracle_met, durations),
                           _label(static), [_label(p) for p in oracle_pools])


def _label(pools: Sequence[Pool]) -> str:
    return " + ".join(f"{p.label} [{', '.join(p.classes)}]" for p in pools)


def write_comparison(folder: Path, c: ShiftComparison) -> Path:
    path = folder / SHIFT_COMPARE_JSON
    path.write_text(json.dumps(asdict(c), indent=1))
    return path


def read_comparison(folder: Path) -> ShiftComparison | None:
    path = folder / SHIFT_COMPARE_JSON
    return ShiftComparison(**json.loads(path.read_text())) if path.exists() else None


def comparison_lines(c: ShiftComparison) -> list[tuple[str, list[float], float, str]]:
    """(what, goodput per phase, overall, deployment) for the live run and the two references."""
    return [("live (this run)", c.live, c.overall(c.live), "as the policy moved it"),
            ("best static", c.static, c.overall(c.static), c.static_deployment),
            ("per-phase oracle", c.oracle, c.overall(c.oracle), "; ".join(c.oracle_deployments))]


def ratios(c: ShiftComparison) -> Mapping[str, float | None]:
    """live ÷ static and live ÷ oracle, overall (the issue's targets: ≥ 1.25 and ≥ 0.9)."""
    live, static, oracle = c.overall(c.live), c.overall(c.static), c.overall(c.oracle)
    return {"live/static": live / static if static > 0 else None, "live/oracle": live / oracle if oracle > 0 else None}
