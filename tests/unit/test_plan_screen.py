"""The screen never drops the winner: on every shipped scenario with a planning question, the search that
simulates only what the steady-state estimate cannot rule out answers what the exhaustive search answers.

Judged as the same deployment, or one the exhaustive search cannot tell from its winner: within its bisection's
tolerance (REFINE) and two standard deviations of its winner's rate over seeds."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from controllers.plan.evaluate import REFINE
from controllers.plan.parallel import Runner, runner
from controllers.plan.search import PlanOptions, search
from deployments.resolve import Resolved, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
OPTIONS = PlanOptions(seeds=2, refine_pools=3, top=1)
# Every shipped planning question; the exhaustive search of most takes minutes on 2 cores, so `make test` runs the
# two cheapest and `make test-slow` the rest (marker slow).
SLOW = pytest.mark.slow
QUESTIONS = [pytest.param("plan-70b-h200.yaml", None, marks=SLOW),
             pytest.param("plan-70b-h200-1k1k.yaml", None, marks=SLOW),
             ("plan-70b-h100-2k200.yaml", None),
             pytest.param("paper-70b-mi325x.yaml", None, marks=SLOW),
             ("demo.yaml", None),
             *(pytest.param("shift.yaml", k, marks=SLOW) for k in range(3))]


@pytest.fixture(scope="module")
def pool() -> Iterator[Runner]:
    with runner() as r:
        yield r


def question(name: str, phase: int | None) -> Resolved:
    r = load_scenario(SCENARIOS / name, need_configurations=False)
    return r if phase is None else replace(r, scenario=r.scenario.phase_mix(phase))


@pytest.mark.timeout(2400)     # two whole searches, one of them exhaustive (minutes on a busy 2-core machine)
@pytest.mark.parametrize(("name", "phase"), QUESTIONS)
def test_the_screened_search_finds_the_exhaustive_searchs_winner(name: str, phase: int | None, pool: Runner) -> None:
    r = question(name, phase)
    fast = search(r, OPTIONS, pool)
    full = search(r, replace(OPTIONS, exhaustive=True), pool)
    assert not full.screened_out and len(full.screened) == fast.candidates
    won, truth = fast.ranked[0], full.ranked[0]
    print(f"{name} phase {phase}: screened {fast.candidates - len(fast.screened_out)} of {fast.candidates}; "
          f"winner {won.candidate.pools} {won.max_rate:.3f} vs exhaustive {truth.candidate.pools} "
          f"{truth.max_rate:.3f} ± {truth.max_rate_std:.3f}")
    assert all(e.candidate != truth.candidate for e in fast.screened_out)
    if won.candidate != truth.candidate:
        assert won.max_rate >= truth.max_rate * (1 - REFINE.tolerance) - 2 * truth.max_rate_std
