"""Executing a transition: its steps one by one through a `Fleet`, and the way back when one fails.

The fleet does what each step means (steps.py's docstring; `deployments/fleet.py: execute` over Ray Serve).
A step that fails or times out (the fleet raises) stops the transition; then
- a `Deploy` that failed is removed (its replicas may be half up and hold GPUs; best effort);
- the transition back to the last working split is planned from the set as it stands (`plan_back`) and its
  steps executed the same way. A rollback that fails too stops where it is: the set in force keeps serving
  (every class with a live configuration keeps it) and the line says so.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from controllers.transition.planner import Transition, TransitionError
from controllers.transition.steps import Deploy, Remove, SetView, Step, apply


class Fleet(Protocol):
    """Executes one step on the serving set and returns the seconds it took; raises on failure or timeout."""

    def execute(self, step: Step) -> float: ...


@dataclass(frozen=True)
class StepDone:
    """One step as executed: how long it took, its error (None: done), and whether it was part of a rollback."""

    step: Step
    seconds: float
    error: str | None = None
    rollback: bool = False


@dataclass(frozen=True)
class Executed:
    """The outcome: the steps executed, the set in force at the end, whether the target was reached, and why not."""

    done: tuple[StepDone, ...]
    view: SetView
    reached: bool
    reason: str             # one line

    @property
    def rolled_back(self) -> bool:
        return any(d.rollback for d in self.done)


def run_steps(steps: Sequence[Step], view: SetView, fleet: Fleet, rollback: bool,
              on_step: Callable[[StepDone], None]) -> tuple[list[StepDone], SetView, StepDone | None]:
    """Execute `steps` from `view` until one fails: what was done, the set after the last step that succeeded, and
    the failed step (None: all done)."""
    done: list[StepDone] = []
    for step in steps:
        try:
            seconds = fleet.execute(step)
        except Exception as e:  # the fleet's failure, whatever its type, is the step's outcome
            failed = StepDone(step, 0.0, f"{type(e).__name__}: {e}", rollback)
            done.append(failed)
            on_step(failed)
            return done, view, failed
        view = apply(view, step)
        done.append(StepDone(step, seconds, None, rollback))
        on_step(done[-1])
    return done, view, None


def execute_transition(transition: Transition, start: SetView, fleet: Fleet,
                       plan_back: Callable[[SetView], Transition],
                       on_step: Callable[[StepDone], None] = lambda _: None) -> Executed:
    """Run `transition`'s steps from `start`; on a failed step, clean up and roll back to the split `plan_back`
    plans for (module docstring). `on_step` sees every step as it ends."""
    done, view, failed = run_steps(transition.steps, start, fleet, False, on_step)
    if failed is None:
        return Executed(tuple(done), view, True, f"reached the target in {len(done)} steps")
    why = f"{failed.step.line.split(':')[0]} failed ({failed.error})"
    if isinstance(failed.step, Deploy):
        cleanup, view, _ = run_steps([Remove(failed.step.config.name, "it failed to start")],
                                     SetView({**view.configs, failed.step.config.name: failed.step.config},
                                             view.weights), fleet, True, on_step)
        done += cleanup
        if cleanup[-1].error is not None:
            view = SetView({n: c for n, c in view.configs.items() if n != failed.step.config.name}, view.weights)
    try:
        back = plan_back(view)
    except TransitionError as e:
        return Executed(tuple(done), view, False, f"{why}; no way back planned ({e}): serving on the set as it stands")
    steps, view, failed_back = run_steps(back.steps, view, fleet, True, on_step)
    done += steps
    if failed_back is not None:
        return Executed(tuple(done), view, False, f"{why}; the rollback's {failed_back.step.line.split(':')[0]} "
                                                  f"failed too ({failed_back.error}): serving on the set as it stands")
    return Executed(tuple(done), view, False, f"{why}; rolled back to the last working split in {len(steps)} steps")
