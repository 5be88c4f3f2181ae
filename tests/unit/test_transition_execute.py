"""Executing a planned transition through a fleet, and rolling back when a step fails.

The fleet here is an in-memory fake (the real one, `deployments/fleet.py` over Ray Serve, is on branch `fleet`):
it applies each step to the serving set, checks the GPUs in use never exceed the node, and fails the steps a
test names."""

from collections.abc import Callable, Sequence

from controllers.plan.candidates import Pool, Shape
from controllers.transition.execute import Executed, StepDone, execute_transition
from controllers.transition.planner import ServingSet, Transition, plan_transition
from controllers.transition.steps import Deploy, Drain, Remove, Route, SetView, Step, apply
from deployments.placement import Node
from schema.deployment import ParallelConfig

NODES = [Node("n0", 8.0)]
CLASSES = ("chat", "summarize")


def start_s(c: ParallelConfig) -> float:
    return 20.0 + 2.0 * c.gpus_per_replica


class FakeFleet:
    """The serving set in memory; `fail(step) -> True` makes that step raise."""

    def __init__(self, view: SetView, fail: Callable[[Step], bool] = lambda _: False):
        self.view = view
        self.fail = fail
        self.log: list[str] = []

    def execute(self, step: Step) -> float:
        self.log.append(step.line)
        if self.fail(step):
            raise TimeoutError(f"{type(step).__name__.lower()} timed out")
        self.view = apply(self.view, step)
        used = sum(c.gpus_per_replica * c.replicas for c in self.view.configs.values())
        assert used <= 8, f"{used} GPUs in use after {step.line}"
        for cls, row in self.view.weights.items():        # routed only to live configurations
            assert all(n in self.view.configs for n, w in row.items() if w > 0), (cls, row)
        return 1.0


def plan(view: SetView, target: Sequence[Pool], used: set[str]) -> Transition:
    t = plan_transition(ServingSet(tuple(view.configs.values()), view.weights), target, NODES, start_s, drain_s=5.0,
                        used_names=used)
    used.update(c.name for s in t.steps if isinstance(s, Deploy) for c in [s.config])
    return t


def pools(view: SetView) -> list[tuple[Shape, int, tuple[str, ...]]]:
    """Each live configuration's shape, replicas and the classes routed to it."""
    return sorted((Shape(c.tp, c.pp), c.replicas, tuple(k for k, row in view.weights.items() if row.get(n, 0) > 0))
                  for n, c in view.configs.items())


def move(start: SetView, target: Sequence[Pool], fail: Callable[[Step], bool]
         ) -> tuple[Executed, list[StepDone]]:
    used = set(start.configs)
    back_to = [Pool(Shape(c.tp, c.pp), c.replicas, tuple(k for k, row in start.weights.items() if row.get(n, 0) > 0))
               for n, c in start.configs.items()]
    fleet = FakeFleet(start, fail)
    seen: list[StepDone] = []
    out = execute_transition(plan(start, target, used), start, fleet, lambda v: plan(v, back_to, used), seen.append)
    assert out.view == fleet.view and list(out.done) == seen
    return out, seen


TP4 = SetView({"tp4": ParallelConfig(name="tp4", tp=4)}, {"chat": {"tp4": 1.0}, "summarize": {"tp4": 1.0}})
TP8 = SetView({"tp8": ParallelConfig(name="tp8", tp=8)}, {"chat": {"tp8": 1.0}, "summarize": {"tp8": 1.0}})
SPLIT = [Pool(Shape(4, 1), 1, ("chat",)), Pool(Shape(1, 4), 1, ("summarize",))]


def test_a_transition_that_succeeds_reaches_the_target() -> None:
    out, _ = move(TP4, SPLIT, lambda _: False)
    assert out.reached and not out.rolled_back and "reached" in out.reason
    assert pools(out.view) == [(Shape(1, 4), 1, ("summarize",)), (Shape(4, 1), 1, ("chat",))]


def test_a_shape_that_fails_to_start_is_removed_and_the_old_split_kept() -> None:
    out, done = move(TP4, SPLIT, lambda s: isinstance(s, Deploy))
    assert not out.reached and out.rolled_back
    assert "deploy pp4 (1×PP4) failed (TimeoutError: deploy timed out)" in out.reason and "rolled back" in out.reason
    assert "\n" not in out.reason
    assert any(isinstance(d.step, Remove) and d.step.name == "pp4" and d.rollback for d in done)
    assert pools(out.view) == [(Shape(4, 1), 1, CLASSES)]


def test_a_failure_after_the_old_split_is_gone_rolls_back_to_its_shape() -> None:
    # TP8 holds every GPU: the plan drains and removes it before the new shapes start; the second deploy fails
    deploys: list[Step] = []

    def fail(s: Step) -> bool:
        if isinstance(s, Deploy):
            deploys.append(s)
            return len(deploys) == 2
        return False

    out, done = move(TP8, SPLIT, fail)
    assert not out.reached and out.rolled_back and "rolled back" in out.reason
    assert pools(out.view) == [(Shape(8, 1), 1, CLASSES)]          # a TP8 again, serving both classes
    assert "tp8" not in out.view.configs                            # under a new name: names are never reused
    assert any(isinstance(d.step, Drain) for d in done)


def test_a_rollback_that_fails_too_stops_and_says_so() -> None:
    # no shape starts any more (the hardware is gone): TP8 is drained and removed, TP4 fails, so does the TP8 back
    out, done = move(TP8, SPLIT, lambda s: isinstance(s, Deploy))
    assert not out.reached and "failed too" in out.reason and "set as it stands" in out.reason
    assert [d.step.config.tp for d in done if isinstance(d.step, Deploy)] == [4, 8]
    assert out.view.configs == {} and all(not row for row in out.view.weights.values())   # held, not dropped


def test_a_drain_that_times_out_routes_back_to_the_old_split() -> None:
    start = SetView({"tp4": ParallelConfig(name="tp4", tp=4), "tp2": ParallelConfig(name="tp2", tp=2, replicas=2)},
                    {"chat": {"tp4": 1.0}, "summarize": {"tp2": 1.0}})
    out, done = move(start, [Pool(Shape(8, 1), 1, CLASSES)], lambda s: isinstance(s, Drain))
    assert not out.reached and "drain" in out.reason and "rolled back" in out.reason
    assert pools(out.view) == [(Shape(2, 1), 2, ("summarize",)), (Shape(4, 1), 1, ("chat",))]
    assert any(isinstance(d.step, Route) and d.rollback for d in done)
