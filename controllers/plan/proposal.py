"""The scenario that deploys a plan's top deployments side by side (`--write-scenario`, `--verify`).

Each planned pool becomes a configuration; hardware grows so that every deployment has the budget's nodes to
itself; the controller only observes while every class of every load step goes to each deployment in equal
shares (by GPUs for a per-GPU objective). The load is a ladder of rates per deployment chosen from the
predictions: one every deployment should meet, one between each pair of neighbouring predicted capacities,
and one none should meet, so that the live run tells the deployments apart where the plan says they differ.
"""

import math
import re
from pathlib import Path

import yaml

from controllers.plan.candidates import Candidate
from controllers.plan.schema import PlannedDeployment, PlannedPool, PlanSection
from controllers.plan.search import Plan
from controllers.scenario import Resolved, Scenario
from deployments.config import ParallelConfig

LOW, HIGH = 0.7, 1.3      # the ladder's first and last rungs, relative to the lowest and highest capacity


def _name(rank: int, pool_index: int, c: Candidate) -> str:
    p = c.pools[pool_index]
    shape = re.sub(r"[^a-z0-9]+", "", p.shape.label.lower())
    suffix = "" if c.homogeneous else "abcdefgh"[pool_index]
    return f"p{rank}{suffix}-{p.replicas}x{shape}"


def planned(plan: Plan, k: int, classes: int) -> PlanSection:
    """The plan section of the top `k` deployments that share the winner's engine options."""
    knobs = plan.ranked[0].candidate.knobs
    chosen = [e for e in plan.ranked if e.candidate.knobs == knobs][:k]
    deployments = []
    for rank, e in enumerate(chosen, start=1):
        c = e.candidate
        pools = [PlannedPool(config=_name(rank, i, c), classes=list(p.classes)) for i, p in enumerate(c.pools)]
        deployments.append(PlannedDeployment(rank=rank, label=c.label(classes), gpus=c.gpus, max_rate=e.max_rate,
                                             max_rate_std=e.max_rate_std, pools=pools))
    split = "per-gpu" if plan.objective == "goodput-per-gpu" else "equal"
    return PlanSection(objective=plan.objective, split=split, deployments=deployments)


def ladder(section: PlanSection) -> list[float]:
    """Per-deployment rates to offer (requests/s per split unit, engine clock), rising."""
    caps = sorted((d.max_rate / section.unit(d) for d in section.deployments), reverse=True)
    rungs = [LOW * caps[-1]]
    rungs += [math.sqrt(a * b) for a, b in zip(caps[1:][::-1], caps[:-1][::-1], strict=True)]
    rungs.append(HIGH * caps[0])
    out: list[float] = []
    for r in sorted(rungs):
        if r > 0 and (not out or r > out[-1] * 1.01):
            out.append(r)
    return out


def proposal(resolved: Resolved, plan: Plan, k: int, duration_s: float | None = None) -> Scenario:
    """A scenario that deploys the plan's top `k` side by side and offers them the ladder of rates."""
    s = resolved.scenario
    names = [c.name for c in s.classes]
    section = planned(plan, k, len(names))
    chosen = [e for e in plan.ranked if e.candidate.knobs == plan.ranked[0].candidate.knobs][:k]
    gpn = plan.budget.gpus_per_node
    configs = []
    for d, e in zip(section.deployments, chosen, strict=True):
        for pool, p in zip(d.pools, e.candidate.pools, strict=True):
            configs.append(ParallelConfig(name=pool.config, tp=p.shape.tp, pp=p.shape.pp, replicas=p.replicas,
                                          spread_pp_over_nodes=p.shape.gpus > gpn))
    knobs = chosen[0].candidate.knobs
    scale = s.engine.time_scale if s.engine.kind == "sim" else 1.0
    units = sum(section.unit(d) for d in section.deployments)
    rates = [round(r * units / scale, 4) for r in ladder(section)]
    load_update: dict[str, object] = {"rates": rates}
    if duration_s is not None:
        load_update["duration_s"] = duration_s
    return s.model_copy(update={
        "name": f"{s.name}-plan",
        "description": (f"Top {len(chosen)} deployments of `parallax plan` ({plan.objective}, {plan.budget.gpus} GPUs "
                        f"each) side by side: " + "; ".join(f"#{d.rank} {d.label}" for d in section.deployments)),
        "kv_dtype": knobs.kv_dtype,
        "hardware": s.hardware.model_copy(update={"nodes": len(chosen) * len(plan.budget.nodes)}),
        "engine": knobs.engine(s.engine),
        "configurations": configs,
        "controller": s.controller.model_copy(update={"policy": "observe"}),
        "load": s.load.model_copy(update=load_update),
        "plan": section,
    })


def write_scenario(scenario: Scenario, path: Path) -> Path:
    """The scenario as YAML: the fields the user wrote and those the plan set (defaults left out)."""
    data = scenario.model_dump(mode="json", exclude_unset=True)
    path.write_text("# Written by `parallax plan`; deploy it with `parallax run`.\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path
