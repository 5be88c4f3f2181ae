"""The live controller's re-plan (controllers/plan/replan.py): correction factors reach the evaluation, the time
budget holds to within one evaluation, and with no factors and no budget it answers what `parallax plan` does."""

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from controllers.plan.candidates import Pool, Shape
from controllers.plan.evaluate import SCREEN
from controllers.plan.parallel import Runner, runner
from controllers.plan.replan import replan
from controllers.plan.search import PlanOptions, search
from deployments.resolve import Resolved, load_scenario

T = TypeVar("T")
R = TypeVar("R")
SHIFT = Path(__file__).resolve().parents[2] / "scenarios" / "shift.yaml"


@pytest.fixture(scope="module")
def pool() -> Iterator[Runner]:
    with runner() as r:
        yield r


def phase(i: int) -> Resolved:
    r = load_scenario(SHIFT, need_configurations=False)
    return replace(r, scenario=r.scenario.phase_mix(i))


def tp8(r: Resolved) -> tuple[Pool, ...]:
    return (Pool(Shape(8, 1), 1, tuple(c.name for c in r.scenario.classes)),)


class Ticking:
    """A runner whose every map of some tasks takes one second of a fake clock."""

    def __init__(self, inner: Runner):
        self.inner, self.now, self.where = inner, 0.0, inner.where

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        if tasks:
            self.now += 1.0
        return self.inner.map(fn, tasks)

    def clock(self) -> float:
        return self.now


def test_a_slower_current_shape_predicts_less_goodput(pool: Runner) -> None:
    day = phase(0)
    plain = replan(day, tp8(day), {}, 0.0, pool)
    slow = replan(day, tp8(day), {(8, 1): (2.0, 2.0)}, 0.0, pool)
    assert plain.evaluated == slow.evaluated == 1                  # a zero budget: the running deployment only
    assert slow.current_goodput < plain.current_goodput
    assert plain.rate == slow.rate == day.scenario.load.arrival.rate  # type: ignore[union-attr]


def test_the_budget_holds_to_within_one_evaluation(pool: Runner) -> None:
    evening = phase(1)
    ticking = Ticking(pool)
    r = replan(evening, tp8(evening), {}, 2.0, ticking, clock=ticking.clock)
    assert r.elapsed_s <= 2.0 + 1.0                 # the goodput runs at the end: one evaluation past the budget
    assert r.evaluated == 2 and "budget" in r.why


def test_with_no_factors_the_best_is_the_plans_within_its_noise(pool: Runner) -> None:
    evening = phase(1)
    got = replan(evening, tp8(evening), {}, math.inf, pool)
    plan = search(evening, PlanOptions(seeds=1, refine_pools=3, top=1), pool)
    assert got.best_goodput >= got.current_goodput
    if got.best == plan.ranked[0].candidate.pools:
        return
    # A different answer must be one the plan itself cannot tell apart from its winner: within the bisection's
    # tolerance of the screening stage the re-plan simulates at.
    rates = {e.candidate.pools: e.max_rate for e in plan.screened}
    assert got.best in rates and rates[got.best] >= plan.ranked[0].max_rate / (1 + SCREEN.tolerance)
