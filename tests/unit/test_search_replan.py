"""The stand-in re-planner over the full search, on physics known in advance (8B bf16 on two H100s): a strict-TPOT
mix takes TP2 and serves more there than on two TP1 replicas; a long-prompt mix takes two TP1 replicas, and the
running split that is already the best is predicted to serve exactly what the best serves."""

import pytest

from controllers.plan.candidates import Pool, Shape
from controllers.plan.parallel import InProcess
from controllers.plan.search_replan import search_replan
from deployments.resolve import Resolved, parse_scenario
from tests.unit.test_repartitioner import SCENARIO


def mix(shares: dict[str, float], rate: float) -> Resolved:
    r = parse_scenario(SCENARIO)
    return Resolved(r.scenario.with_mix(shares, rate), r.model, r.gpu, r.source)


def test_a_strict_tpot_mix_moves_to_tp2() -> None:
    two_tp1 = (Pool(Shape(1, 1), 2, ("fast",)),)
    r = search_replan(mix({"fast": 1.0}, 2.0), two_tp1, {}, 10.0, InProcess())
    assert r.best == (Pool(Shape(2, 1), 1, ("fast",)),)
    assert r.best_goodput > 1.5 * max(r.current_goodput, 0.01) and r.rate == 2.0
    assert r.evaluated > 1 and "full search" in r.why


def test_the_best_split_running_has_the_best_goodput() -> None:
    best = (Pool(Shape(1, 1), 2, ("bulk",)),)
    r = search_replan(mix({"bulk": 1.0}, 2.0), best, {(1, 1): (1.5, 1.0)}, 0.001, InProcess())
    assert r.best == best and r.current_goodput == pytest.approx(r.best_goodput) and r.best_goodput > 0
    assert "over the 0.001 s budget" in r.why and "not applied" in r.why
