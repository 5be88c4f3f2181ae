"""The steps of a transition between two splits of the GPUs, and the serving set they act on.

What each step means (the executor — `fleet`'s functions over Ray Serve — does exactly this):
- `Deploy(config)`: add the configuration as an application of its own, routing weight 0 in every class, and
  wait until every replica is healthy. Its GPUs are reserved but serve nothing until a later `Route`.
- `Scale(name, replicas)`: change a live configuration's replica count in place; existing replicas keep
  serving, new ones serve once healthy, removed ones finish their in-flight requests (Serve's graceful stop).
- `Route(weights)`: the whole routing table, set atomically on every ingress replica. A class whose row has
  no configuration of weight > 0 is *held*: the ingress queues its requests (bounded) until a later `Route`
  gives it one; their wait counts in their TTFT.
- `Drain(name)`: the configuration already has weight 0 in every class; wait (bounded by the executor's
  timeout) until its in-flight requests finish.
- `Remove(name)`: delete its application; its placement groups, and so its GPUs, are free afterwards.

Each step carries a one-line `reason`. `SetView` is what the steps change, without placement: the live
configurations with their replica counts and the routing; `apply` replays one step on it.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from controllers.plan.candidates import Shape
from deployments.routing import Weights
from schema.deployment import ParallelConfig


@dataclass(frozen=True)
class Deploy:
    """Add `config` (weight 0) and wait until healthy. `nodes`: where the plan expects each replica, as
    `plan_nodes` gives it (one node id, or one per pipeline stage of a replica spread over nodes). Ray chooses;
    an executor that finds another placement re-plans from what it finds."""

    config: ParallelConfig
    reason: str
    nodes: tuple[tuple[str, ...], ...] = ()

    @property
    def line(self) -> str:
        c = self.config
        return f"deploy {c.name} ({c.replicas}×{Shape(c.tp, c.pp).label}): {self.reason}"


@dataclass(frozen=True)
class Scale:
    """Change `name`'s replica count in place; `nodes`: where the plan expects its replicas afterwards (as in
    `Deploy`)."""

    name: str
    replicas: int
    reason: str
    nodes: tuple[tuple[str, ...], ...] = ()

    @property
    def line(self) -> str:
        return f"scale {self.name} to {self.replicas}: {self.reason}"


@dataclass(frozen=True)
class Route:
    """The routing table for every class; an empty row holds that class at the ingress."""

    weights: Weights
    reason: str

    @property
    def held(self) -> list[str]:
        """The classes this routing holds (no configuration of weight > 0)."""
        return [c for c, row in self.weights.items() if not any(w > 0 for w in row.values())]

    @property
    def line(self) -> str:
        rows = "; ".join(f"{c} → {_row(row)}" for c, row in self.weights.items())
        return f"route {rows}: {self.reason}"


@dataclass(frozen=True)
class Drain:
    """`name` has weight 0 everywhere: wait until its in-flight requests finish (bounded)."""

    name: str
    reason: str

    @property
    def line(self) -> str:
        return f"drain {self.name}: {self.reason}"


@dataclass(frozen=True)
class Remove:
    """Delete `name`'s application; its GPUs are free afterwards."""

    name: str
    reason: str

    @property
    def line(self) -> str:
        return f"remove {self.name}: {self.reason}"


Step = Deploy | Scale | Route | Drain | Remove


@dataclass(frozen=True)
class SetView:
    """The serving set as the steps see it: live configurations (replica counts current) and the routing."""

    configs: Mapping[str, ParallelConfig]
    weights: Weights = field(default_factory=dict)

    def serving(self, name: str) -> bool:
        """Whether `name` has weight > 0 in some class."""
        return any(row.get(name, 0) > 0 for row in self.weights.values())


def apply(view: SetView, step: Step) -> SetView:
    """The set after `step` (a step the set cannot take raises ValueError naming it)."""
    configs = dict(view.configs)
    match step:
        case Deploy(config=c):
            if c.name in configs:
                raise ValueError(f"deploy {c.name}: already live")
            configs[c.name] = c
        case Scale(name=n, replicas=r):
            if n not in configs or r < 1:
                raise ValueError(f"scale {n} to {r}: not live, or fewer than 1 replica")
            configs[n] = configs[n].model_copy(update={"replicas": r})
        case Route(weights=w):
            dead = {n for row in w.values() for n, x in row.items() if x > 0 and n not in configs}
            if dead:
                raise ValueError(f"route: {', '.join(sorted(dead))} not live")
            return SetView(configs, {c: dict(row) for c, row in w.items()})
        case Drain(name=n):
            if n not in configs or view.serving(n):
                raise ValueError(f"drain {n}: not live, or still routed")
        case Remove(name=n):
            if n not in configs or view.serving(n):
                raise ValueError(f"remove {n}: not live, or still routed")
            del configs[n]
    return SetView(configs, view.weights)


def _row(row: Mapping[str, float]) -> str:
    live = {n: w for n, w in row.items() if w > 0}
    if not live:
        return "held"
    if len(live) == 1:
        return next(iter(live))
    total = sum(live.values())
    return ", ".join(f"{n} {w / total:.0%}" for n, w in live.items())
