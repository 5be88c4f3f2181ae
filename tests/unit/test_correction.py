"""Correction factors with answers from arithmetic: measured ÷ predicted per shape and figure, bounded, smoothed
as an EWMA of the log, and kept when an interval has too few requests."""

import math

import pytest

from controllers.correction import Factors, Observation, correct, factors_of
from schema.controller import CorrectionConfig

SETTINGS = CorrectionConfig(min_factor=0.5, max_factor=2.0, smoothing=0.5, min_samples=20)


def obs(measured: float | None, predicted: float | None = 0.1, samples: int = 50, metric: str = "ttft",
        tp: int = 4, pp: int = 1) -> Observation:
    return Observation(tp, pp, metric, measured, predicted, samples)  # type: ignore[arg-type]


def test_the_factor_moves_half_way_in_log_towards_the_ratio() -> None:
    f = correct({}, [obs(0.2)], SETTINGS)                     # measured twice the prediction
    assert factors_of(f, 4, 1).ttft == pytest.approx(math.sqrt(2)) and factors_of(f, 4, 1).tpot == 1.0
    f = correct(f, [obs(0.2)], SETTINGS)
    assert factors_of(f, 4, 1).ttft == pytest.approx(2 ** 0.75)
    for _ in range(30):
        f = correct(f, [obs(0.2)], SETTINGS)
    assert factors_of(f, 4, 1).ttft == pytest.approx(2.0)   # a steady ratio is reached


def test_ratios_are_bounded_and_halves_mirror_doubles() -> None:
    steady = CorrectionConfig(min_factor=0.5, max_factor=2.0, smoothing=1.0, min_samples=1)
    assert correct({}, [obs(10.0)], steady)[(4, 1)].ttft == 2.0     # ×100 measured: the bound
    assert correct({}, [obs(0.001)], steady)[(4, 1)].ttft == 0.5
    up, down = correct({}, [obs(0.15)], SETTINGS), correct({}, [obs(0.1 / 1.5)], SETTINGS)
    assert up[(4, 1)].ttft * down[(4, 1)].ttft == pytest.approx(1.0)


def test_an_interval_pools_its_observations_by_their_requests() -> None:
    steady = CorrectionConfig(smoothing=1.0, min_samples=20)
    # 10 requests at the prediction, 30 at twice it: the weighted geometric mean is 2^(30/40)
    f = correct({}, [obs(0.1, samples=10), obs(0.2, samples=30), obs(None, samples=100), obs(0.3, predicted=0.0)],
                steady)
    assert f[(4, 1)].ttft == pytest.approx(2 ** 0.75)


def test_too_few_requests_keep_the_factor_and_shapes_and_figures_are_apart() -> None:
    before = {(4, 1): Factors(ttft=1.5, tpot=0.8)}
    f = correct(before, [obs(0.4, samples=19), obs(0.05, metric="tpot", samples=19)], SETTINGS)
    assert f == before                                         # 19 < min_samples: nothing learnt
    f = correct(before, [obs(0.1, metric="tpot", samples=25), obs(0.1, tp=1, pp=8)], SETTINGS)
    assert f[(4, 1)] == Factors(ttft=1.5, tpot=pytest.approx(math.sqrt(0.8)))
    assert f[(1, 8)] == Factors(ttft=1.0, tpot=1.0)           # measured as predicted
    assert factors_of(f, 2, 2) == Factors()                   # never seen: uncorrected
