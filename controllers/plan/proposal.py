"""The scenario that deploys a plan's top deployments side by side (`--write-scenario`, `--verify`).

Each planned pool becomes a configuration; hardware grows so that every deployment has the budget's nodes to
itself; the controller only observes while every class of every load step goes to each deployment in equal
shares (by GPUs for a per-GPU objective). The load is a ladder of rates per deployment chosen from the
predictions: one every deployment should meet and one between each pair of neighbouring predicted capacities,
so that the live run tells the deployments apart where the plan says they differ.
The simulator runs that same ladder offline, so each step has a prediction for the very load it offers. A step
lasts the scenario's `load.duration_s`, or longer where the slowest pool's requests need it to see queues
build (STEP_E2E of its median E2E on the engine clock), unless the caller fixes it.

With the sim engine, the live path's budget on a small machine (deployments/README.md, "Live-path capacity")
sets the floor of `time_scale` (requests per wall second) and of `stream_interval_ms` (SSE events per wall
second: the streams in flight ÷ the interval, whatever the time scale).
"""

import math
import re
from dataclasses import replace
from pathlib import Path

import yaml

from controllers.plan.candidates import Candidate
from controllers.plan.evaluate import Miss, at_rate, judge, run_requests, stream
from controllers.plan.search import Evaluated, Plan
from deployments.engines.sim.offline import RequestSpec
from deployments.resolve import Resolved
from deployments.routing import WeightedRoundRobin
from schema.deployment import EngineConfig
from schema.plan import PlannedDeployment, PlannedPool, PlanSection
from schema.scenario import Scenario
from schema.traffic import TrafficClass

LOW, HIGH = 0.7, 1.3          # the ladder's first rung, and the last for one deployment, relative to capacity
WALL_REQUESTS_PER_S = 15.0    # what the live path of a 2-core machine carries comfortably
TIMEOUT_MARGIN = 1.25         # per-request timeout over the slowest latency that can still meet its SLO
WALL_EVENTS_PER_S = 400.0     # SSE events per second, well inside the ~1,100 it carries at most
WARMUP_WALL_S = 5.0           # before the first step: fresh replicas and connections are not judged
STEP_E2E = 2.0                # a step spans this many median E2E latencies (engine clock) of the slowest pool


def _name(rank: int, pool_index: int, c: Candidate) -> str:
    p = c.pools[pool_index]
    suffix = "" if c.homogeneous else "abcdefgh"[pool_index]
    if p.prefill is not None:   # 3P(TP2)+1D(TP2): p1-3p-tp2-1d-tp2
        return f"p{rank}{suffix}-" + re.sub(r"[^a-z0-9]+", "-", p.label.lower()).strip("-")
    shape = re.sub(r"[^a-z0-9]+", "", p.shape.label.lower())
    return f"p{rank}{suffix}-{p.replicas}x{shape}"


def chosen(plan: Plan, k: int) -> list[Evaluated]:
    """The top `k` deployments that share the winner's engine options (one scenario has one set)."""
    knobs = plan.ranked[0].candidate.knobs
    return [e for e in plan.ranked if e.candidate.knobs == knobs][:k]


def planned(plan: Plan, k: int, classes: int) -> PlanSection:
    """The plan section of the top `k` deployments (no step predictions yet)."""
    deployments = []
    for rank, e in enumerate(chosen(plan, k), start=1):
        c = e.candidate
        pools = [PlannedPool(config=_name(rank, i, c), classes=list(p.classes)) for i, p in enumerate(c.pools)]
        deployments.append(PlannedDeployment(rank=rank, label=c.label(classes), gpus=c.gpus, max_rate=e.max_rate,
                                             max_rate_std=e.max_rate_std, pools=pools))
    split = "per-gpu" if plan.objective == "goodput-per-gpu" else "equal"
    return PlanSection(objective=plan.objective, split=split, deployments=deployments)


def ladder(section: PlanSection) -> list[float]:
    """Per-deployment rates to offer (requests/s per split unit, engine clock), rising: one below every
    predicted capacity, one between each pair of neighbours (one above, for a single deployment)."""
    caps = sorted((d.max_rate / section.unit(d) for d in section.deployments), reverse=True)
    rungs = [LOW * caps[-1]]
    rungs += [math.sqrt(a * b) for a, b in zip(caps[1:][::-1], caps[:-1][::-1], strict=True)]
    if len(caps) == 1:
        rungs.append(HIGH * caps[0])
    out: list[float] = []
    for r in sorted(rungs):
        if r > 0 and (not out or r > out[-1] * 1.01):
            out.append(r)
    return out


def live_engine(engine: EngineConfig, section: PlanSection, best: list[Evaluated], top: float) -> EngineConfig:
    """The sim engine slowed and its streams coalesced enough for the live path to carry the top rung."""
    if engine.kind != "sim":
        return engine
    units = sum(section.unit(d) for d in section.deployments)
    in_flight = sum(top * section.unit(d) * sh * f.e2e_p50_s
                    for d, e in zip(section.deployments, best, strict=True)
                    for sh, f in zip(e.shares, e.figures, strict=True))
    return engine.model_copy(update={
        "time_scale": max(engine.time_scale, math.ceil(top * units / WALL_REQUESTS_PER_S)),
        "stream_interval_ms": max(engine.stream_interval_ms, math.ceil(in_flight / WALL_EVENTS_PER_S * 10) * 100)})


def slowest_meeting_s(plan: Plan, tc: TrafficClass) -> float | None:
    """The longest E2E (engine seconds) a request of class `tc` can take and still meet its SLO; None when the
    SLO does not bound it (a TTFT or a TPOT target alone)."""
    slo = tc.slo
    if slo.e2e_ms is not None:
        return slo.e2e_ms / 1e3
    if slo.ttft_ms is None or slo.tpot_ms is None:
        return None
    longest = max(r.output_len for r in stream(plan.setup, [tc.name], 256, plan.setup.engine.seed))
    return (slo.ttft_ms + (longest - 1) * slo.tpot_ms) / 1e3


def predict_steps(plan: Plan, section: PlanSection, best: list[Evaluated], rungs: list[float], duration_s: float,
                  warmup_s: float) -> list[list[bool]]:
    """Per deployment, whether every class meets its target at each step, simulated offline under the load a
    live run offers: the classes' stream at the ladder's total rates (after a warm-up at the first), each
    request sent where the ingress's weighted round-robin sends it, each pool's requests through its replicas."""
    setup = plan.setup
    names = [c.name for c in setup.classes]
    units = sum(section.unit(d) for d in section.deployments)
    router = WeightedRoundRobin(section.weights(names))
    sent: dict[str, list[tuple[int, RequestSpec]]] = {}
    start = 0.0
    for k, (x, span, step) in enumerate([(rungs[0], warmup_s, -1), *((x, duration_s, j) for j, x in enumerate(rungs))]):
        if span <= 0:
            continue
        for r in at_rate(stream(setup, names, max(1, round(x * units * span)), setup.engine.seed + k), x * units):
            sent.setdefault(router.choose(r.tag), []).append((step, replace(r, arrival=r.arrival + start)))
        start += span
    out = []
    for d, e in zip(section.deployments, best, strict=True):
        met = [True] * len(rungs)
        for planned_pool, pool in zip(d.pools, e.candidate.pools, strict=True):
            mine = sent.get(planned_pool.config, [])
            records = run_requests(setup, pool, e.candidate.knobs, [r for _, r in mine])
            for j in range(len(rungs)):
                if isinstance(records, Miss):
                    met[j] = False
                    continue
                at_step = [rec for (step, _), rec in zip(mine, records, strict=True) if step == j]
                met[j] = met[j] and judge(setup, at_step, rungs[j], None, pool.tps,
                                             factors=setup.pool_factors(pool)).met
        out.append(met)
    return out


def proposal(resolved: Resolved, plan: Plan, k: int, duration_s: float | None = None) -> Scenario:
    """A scenario that deploys the plan's top `k` side by side and offers them the ladder of rates."""
    s = resolved.scenario
    best = chosen(plan, k)
    section = planned(plan, k, len(s.classes))
    gpn = plan.budget.gpus_per_node
    configs = [p.config(pool.config, gpn, True)
               for d, e in zip(section.deployments, best, strict=True)
               for pool, p in zip(d.pools, e.candidate.pools, strict=True)]
    rungs = ladder(section)
    engine = live_engine(best[0].candidate.knobs.engine(s.engine), section, best, rungs[-1])
    scale = engine.clock_scale
    own_scale = s.engine.clock_scale
    bounds = [b for tc in s.classes if (b := slowest_meeting_s(plan, tc)) is not None]
    timeout = max(s.load.timeout_s / own_scale, TIMEOUT_MARGIN * max(bounds, default=0.0)) * scale
    slowest = max((f.e2e_p50_s for e in best for f in e.figures), default=0.0)
    step_s = duration_s or max(s.load.duration_s, math.ceil(STEP_E2E * slowest * scale))
    load = s.load.model_copy(update={"duration_s": step_s, "timeout_s": round(timeout, 1),
                                     "warmup_s": max(s.load.warmup_s, WARMUP_WALL_S)})
    units = sum(section.unit(d) for d in section.deployments)
    load = load.model_copy(update={"rates": [round(x * units / scale, 4) for x in rungs]})
    steps = predict_steps(plan, section, best, rungs, load.duration_s / scale, load.warmup_s / scale)
    deployments = [d.model_copy(update={"predicted_steps": met}) for d, met in zip(section.deployments, steps,
                                                                                   strict=True)]
    return s.model_copy(update={
        "name": f"{s.name}-plan",
        "description": (f"Top {len(best)} deployments of `parallax plan` ({plan.objective}, {plan.budget.gpus} GPUs "
                        f"each) side by side: " + "; ".join(f"#{d.rank} {d.label}" for d in section.deployments)),
        "kv_dtype": best[0].candidate.knobs.kv_dtype,
        "hardware": s.hardware.model_copy(update={"nodes": len(best) * len(plan.budget.nodes)}),
        "engine": engine,
        "configurations": configs,
        "controller": s.controller.model_copy(update={"policy": "observe"}),
        "load": load,
        "plan": section.model_copy(update={"deployments": deployments}),
    })


def write_scenario(scenario: Scenario, path: Path) -> Path:
    """The scenario as YAML: the fields the user wrote and those the plan set (defaults left out)."""
    data = scenario.model_dump(mode="json", exclude_unset=True)
    path.write_text("# Written by `parallax plan`; deploy it with `parallax run`.\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path
