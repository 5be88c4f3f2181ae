"""The steps that change the serving set while it serves: what `deployments/fleet.py` executes, what the
transition planner (controllers/transition) composes.

What each step means (the fleet does exactly this):
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

Each step carries a one-line `reason`.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from deployments.routing import Weights, held_classes
from schema.deployment import ParallelConfig, shape_label


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
        return f"deploy {c.name} ({c.replicas}×{shape_label(c.tp, c.pp)}): {self.reason}"


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
        return held_classes(self.weights)

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



def _row(row: Mapping[str, float]) -> str:
    live = {n: w for n, w in row.items() if w > 0}
    if not live:
        return "held"
    if len(live) == 1:
        return next(iter(live))
    total = sum(live.values())
    return ", ".join(f"{n} {w / total:.0%}" for n, w in live.items())
