"""What a transition costs: how long each step takes, and the serving capacity missing meanwhile.

The steps run one after another. A step lasts
- `Deploy(c)` / `Scale` up: `start_s(c)`, the configuration's start time (its new replicas start together);
- `Drain`, `Scale` down: `drain_s`, the executor's drain bound (the estimate is that bound: pessimistic);
- `Route`, `Remove`: 0 (an atomic table swap; deleting an application returns its GPUs within Serve's
  control loop, not modelled).

While a step lasts, a GPU of the budget *serves* when it belongs to a live replica of a configuration that
has weight > 0 in some class: a starting replica, a draining configuration, a replica being scaled away and
a free GPU do not. The transition's cost is
- `lost_gpu_s` = Σ over steps of (budget GPUs − serving GPUs) × duration: the GPU-seconds of the budget that
  served nothing during the transition (free GPUs included, which staying put may also leave idle);
- `held_s[c]` = Σ over steps of the duration during which class `c`'s row is empty: how long its requests
  wait in the ingress queue (at worst; a request that arrives late in a hold waits less);
- `duration_s`, the sum of the durations;
- `fewest_serving_gpus`, the deepest dip: the fewest GPUs serving during any step that takes time.

A policy prices `lost_gpu_s` at the goodput per GPU it expects while moving and `held_s` at each class's
arrival rate, and subtracts both from a move's predicted gain.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controllers.transition.steps import Deploy, Drain, Remove, Route, Scale, SetView, Step, apply
from deployments.routing import held_classes
from schema.deployment import ParallelConfig

# seconds until a new replica of the configuration is healthy: deployments.startup.start_seconds(resolved, measured)
StartSeconds = Callable[[ParallelConfig], float]


@dataclass(frozen=True)
class StepCost:
    """One step's estimate: when it starts (seconds into the transition), how long it lasts, the GPUs serving
    meanwhile and the classes held meanwhile."""

    start_s: float
    duration_s: float
    serving_gpus: int
    held: tuple[str, ...]

    def lost_gpu_s(self, budget_gpus: int) -> float:
        return (budget_gpus - self.serving_gpus) * self.duration_s


@dataclass(frozen=True)
class TransitionCost:
    """The estimate of a whole transition (definitions in the module docstring)."""

    duration_s: float
    lost_gpu_s: float
    held_s: dict[str, float]
    steps: tuple[StepCost, ...]

    @property
    def held_class_s(self) -> float:
        """Class-seconds held, summed over the classes."""
        return sum(self.held_s.values())

    def fewest_serving_gpus(self, budget_gpus: int) -> int:
        """The fewest GPUs serving during a step that takes time (the budget when none does)."""
        return min((s.serving_gpus for s in self.steps if s.duration_s > 0), default=budget_gpus)


def step_duration(view: SetView, step: Step, start_s: StartSeconds, drain_s: float) -> float:
    """How long `step` lasts, taken on `view` (the set before it)."""
    match step:
        case Deploy(config=c):
            return start_s(c)
        case Scale(name=n, replicas=r):
            c = view.configs[n]
            return start_s(c) if r > c.replicas else drain_s
        case Drain():
            return drain_s
        case Route() | Remove():
            return 0.0


def serving_gpus(view: SetView, step: Step) -> int:
    """GPUs of `view` that serve while `step` runs (a Scale counts only the replicas serving throughout)."""
    total = 0
    for name, c in view.configs.items():
        if not view.serving(name):
            continue
        replicas = min(c.replicas, step.replicas) if isinstance(step, Scale) and step.name == name else c.replicas
        total += replicas * c.gpus_per_replica
    return total


def held(view: SetView) -> tuple[str, ...]:
    """The classes whose row routes nowhere."""
    return tuple(held_classes(view.weights))


def transition_cost(current: SetView, steps: Sequence[Step], budget_gpus: int, start_s: StartSeconds,
                    drain_s: float) -> TransitionCost:
    """Replay `steps` from `current` and price each one."""
    view = current
    t = 0.0
    out = []
    held_s = dict.fromkeys(current.weights, 0.0)
    lost = 0.0
    for step in steps:
        d = step_duration(view, step, start_s, drain_s)
        sc = StepCost(t, d, serving_gpus(view, step), held(view))
        out.append(sc)
        lost += sc.lost_gpu_s(budget_gpus)
        for c in sc.held:
            held_s[c] = held_s.get(c, 0.0) + d
        t += d
        view = apply(view, step)
    return TransitionCost(t, lost, held_s, tuple(out))
