"""The re-partitioning decision: a move's value over the horizon with the transition's cost subtracted, and the
rules that keep it from flapping (gain margin held for the dwell, spacing between moves, moves per hour)."""

import itertools
import math
import random
from dataclasses import dataclass

import pytest

from controllers.correction import Factors
from controllers.plan.candidates import Pool, Shape
from controllers.repartition import (
    Dwell,
    Valuation,
    decide,
    factor_pairs,
    measured_goodput,
    observations,
    pools_of,
    realised_gain,
    value_move,
)
from controllers.scoreboard import PairStats, Quantiles, Scoreboard
from controllers.transition.cost import TransitionCost
from schema.controller import RepartitionConfig
from schema.deployment import ParallelConfig

CFG = RepartitionConfig(interval_s=30, min_gain=0.15, min_dwell_s=60, max_moves_per_hour=6, plan_budget_s=10)
TP8 = (Pool(Shape(8, 1), 1, ("chat", "summarize")),)
SPLIT = (Pool(Shape(4, 1), 1, ("chat",)), Pool(Shape(1, 4), 1, ("summarize",)))


@dataclass(frozen=True)
class FakeReplan:
    best: tuple[Pool, ...]
    best_goodput: float
    current_goodput: float
    rate: float = 6.0
    elapsed_s: float = 1.0
    evaluated: int = 10
    why: str = "test"


def cost(lost_gpu_s: float = 0.0, held: dict[str, float] | None = None) -> TransitionCost:
    return TransitionCost(60.0, lost_gpu_s, held or {}, ())


def valuation(gain: float) -> Valuation:
    """A move worth `gain` over staying (no transition cost)."""
    return Valuation(120.0, 100.0, 100.0 * (1 + gain), 0.0, same=False)


def test_the_move_serves_the_old_rate_on_the_gpus_left_while_it_lasts_then_the_new() -> None:
    r = FakeReplan(SPLIT, best_goodput=8.0, current_goodput=4.0)
    # 8 GPUs; a 60 s transition losing 240 GPU-s (half the budget on average): 4 req/s × (60 − 30) s, then 8 × 60
    v = value_move(r, TP8, cost(240.0, {"chat": 10.0}), 8, 120.0)
    assert v.stay == 480.0 and v.gross == 960.0 and v.move == pytest.approx(4.0 * 30 + 8.0 * 60)
    assert v.gain == pytest.approx((600 - 480) / 480)
    # a full hold (every GPU lost throughout): nothing served for 60 s, the held class not charged twice
    assert value_move(r, TP8, cost(480.0, {"chat": 60.0, "summarize": 60.0}), 8, 120.0).move == pytest.approx(480.0)
    # a transition longer than the horizon: only the horizon's part counts
    long = TransitionCost(240.0, 8 * 240.0, {}, ())
    assert value_move(r, TP8, long, 8, 120.0).move == pytest.approx(0.0)


def test_staying_on_the_best_split_has_no_gain() -> None:
    r = FakeReplan(tuple(reversed(SPLIT)), best_goodput=9.0, current_goodput=5.0)   # the same pools, reordered
    v = value_move(r, SPLIT, cost(80.0), 8, 120.0)
    assert v.same and v.gain == 0.0
    assert not decide(Dwell(), 0.0, v, CFG)[0].move


def test_moving_from_a_split_that_serves_nothing_is_an_infinite_gain() -> None:
    v = value_move(FakeReplan(SPLIT, 4.0, 0.0), TP8, cost(10.0), 8, 120.0)
    assert math.isinf(v.gain)
    assert not value_move(FakeReplan(SPLIT, 0.0, 0.0), TP8, cost(10.0), 8, 120.0).gain > 0


def run(gains: list[float], cfg: RepartitionConfig = CFG) -> list[float]:
    """The decision at every re-plan (interval_s apart) over the gains; the times it moved. After a move the
    running split is the best one until the gains say otherwise."""
    dwell = Dwell()
    moves = []
    for i, g in enumerate(gains):
        now = i * cfg.interval_s
        verdict, dwell = decide(dwell, now, valuation(g), cfg)
        assert verdict.reason and "\n" not in verdict.reason
        if verdict.move:
            moves.append(now)
    return moves


def test_noise_around_a_flat_mix_never_moves() -> None:
    rnd = random.Random(7)
    # the gain crosses the margin now and then, but never for two re-plans in a row
    gains = [0.3 if i % 2 else rnd.uniform(-0.2, 0.1) for i in range(400)]
    assert run(gains) == []


def test_a_real_shift_moves_once_after_the_dwell() -> None:
    dwell = Dwell()
    moved: list[float] = []
    shift_at = 10
    for i in range(60):
        now = i * CFG.interval_s
        # after the move, the running split is the best: nothing to move
        v = Valuation(120.0, 150.0, 150.0, 0.0, same=True) if moved else valuation(0.02 if i < shift_at else 0.5)
        verdict, dwell = decide(dwell, now, v, CFG)
        if verdict.move:
            moved.append(now)
    assert moved == [shift_at * CFG.interval_s + CFG.min_dwell_s]


def test_a_gain_that_lapses_restarts_the_dwell() -> None:
    # seen at 0 and 30, lapses at 60, seen again from 90: it has held 60 s at 150
    assert run([0.5, 0.5, 0.0, 0.5, 0.5, 0.5, 0.5])[:1] == [150.0]


def test_moves_are_spaced_and_at_most_max_per_hour() -> None:
    cfg = RepartitionConfig(interval_s=30, min_gain=0.15, min_dwell_s=60, max_moves_per_hour=3, plan_budget_s=10)
    moves = run([0.5] * 300, cfg)                         # a gain that never goes away (a planner that never settles)
    assert all(b - a >= cfg.min_dwell_s for a, b in itertools.pairwise(moves))
    for t in moves:
        assert sum(1 for x in moves if t <= x < t + 3600) <= cfg.max_moves_per_hour
    assert len(moves) >= 6                                # 150 min: it moves again in each new hour


def test_the_realised_gain_is_measured_against_the_prediction_of_staying() -> None:
    assert realised_gain(6.0, 5.0) == pytest.approx(0.2)
    assert realised_gain(4.0, 5.0) == pytest.approx(-0.2)
    assert realised_gain(4.0, 0.0) is None
    board = Scoreboard(0.0, {("a", "chat"): PairStats("a", "chat", goodput=2.5),
                             ("b", "chat"): PairStats("b", "chat", goodput=1.0)})
    assert measured_goodput(board) == 3.5


def test_the_running_split_as_pools_each_class_where_most_of_it_goes() -> None:
    configs = [ParallelConfig(name="tp4", tp=4), ParallelConfig(name="pp4", pp=4), ParallelConfig(name="idle", tp=1)]
    weights = {"chat": {"tp4": 0.9, "pp4": 0.1}, "summarize": {"pp4": 1.0}, "batch": {"tp4": 0.5, "pp4": 0.5}}
    assert pools_of(configs, weights) == (Pool(Shape(4, 1), 1, ("chat", "batch")), Pool(Shape(1, 4), 1, ("summarize",)))
    # in the scenario's order, as the planner lists a pool's classes
    assert pools_of(configs, weights, ("batch", "summarize", "chat"))[0].classes == ("batch", "chat")


def test_observations_pair_measured_and_predicted_per_shape() -> None:
    configs = [ParallelConfig(name="tp4", tp=4)]
    board = Scoreboard(0.0, {("tp4", "chat"): PairStats("tp4", "chat", samples=40, ttft=Quantiles(p90=0.3),
                                                         tpot=Quantiles(p90=0.02)),
                             ("gone", "chat"): PairStats("gone", "chat", samples=40)})
    obs = observations(board, configs, {("tp4", "chat"): (0.2, 0.01)}, 0.9)
    assert [(o.shape, o.metric, o.ratio, o.samples) for o in obs] == [((4, 1), "ttft", pytest.approx(1.5), 40),
                                                                        ((4, 1), "tpot", pytest.approx(2.0), 40)]
    assert factor_pairs({(4, 1): Factors(1.5, 2.0)}) == {(4, 1): (1.5, 2.0)}


def test_a_best_split_that_changes_restarts_the_dwell() -> None:
    other = (Pool(Shape(2, 1), 1, ("chat",)), Pool(Shape(1, 6), 1, ("summarize",)))
    dwell = Dwell()
    moved = []
    targets = [SPLIT, SPLIT, other, other, other]     # a large gain throughout, but to SPLIT, then to `other`
    for i, target in enumerate(targets):
        v = Valuation(120.0, 100.0, 200.0, 0.0, same=False, target=target)
        verdict, dwell = decide(dwell, i * CFG.interval_s, v, CFG)
        if verdict.move:
            moved.append((i * CFG.interval_s, target))
    assert moved == [(4 * CFG.interval_s, other)]      # `other` seen from 60 s: held 60 s at 120 s
