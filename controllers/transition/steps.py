"""The serving set a transition acts on: `SetView` is what the steps (deployments/steps.py, re-exported here
for the planner) change, without placement: the live configurations with their replica counts and the
routing; `apply` replays one step on it.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from deployments.routing import Weights
from deployments.steps import Deploy, Drain, Remove, Route, Scale, Step
from schema.deployment import ParallelConfig

__all__ = ["Deploy", "Drain", "Remove", "Route", "Scale", "SetView", "Step", "apply"]


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
