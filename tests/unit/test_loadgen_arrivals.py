"""Arrival processes match their distributions on seeded runs."""

import numpy as np
import pytest

from loadgen.arrivals import arrival_times, mean_rate, with_rate
from schema.traffic import (
    ClosedLoop,
    ConstantArrival,
    GammaArrival,
    PoissonArrival,
    RampArrival,
    Step,
    StepArrival,
    TraceArrival,
)


def _gaps(arrival, duration, seed=1):
    t = arrival_times(arrival, duration, np.random.default_rng(seed))
    return t, np.diff(t)


def test_poisson_rate_and_dispersion():
    t, g = _gaps(PoissonArrival(rate=50), 400)
    assert len(t) / 400 == pytest.approx(50, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, abs=0.04)   # exponential gaps: CV = 1
    counts = np.histogram(t, bins=400, range=(0, 400))[0]        # counts per second: variance = mean
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_burstiness_is_squared_cv(burstiness):
    t, g = _gaps(GammaArrival(rate=40, burstiness=burstiness), 500)
    assert len(t) / 500 == pytest.approx(40, rel=0.05)
    assert (g.std() / g.mean()) ** 2 == pytest.approx(burstiness, rel=0.1)


def test_constant_is_evenly_spaced():
    t, g = _gaps(ConstantArrival(rate=8), 10)
    assert len(t) == 80
    assert np.allclose(g, 0.125)


def test_ramp_rate_moves_linearly():
    t, _ = _gaps(RampArrival(start_rate=10, end_rate=90), 200)
    first, last = np.histogram(t, bins=4, range=(0, 200))[0][[0, 3]]
    # expected mean rates in the first and last quarter: 20 and 80 req/s over 50 s
    assert first == pytest.approx(20 * 50, rel=0.08)
    assert last == pytest.approx(80 * 50, rel=0.05)
    assert mean_rate(RampArrival(start_rate=10, end_rate=90), 200) == 50


def test_steps_change_rate_at_given_times():
    a = StepArrival(steps=[Step(at_s=0, rate=10), Step(at_s=100, rate=60)])
    t, _ = _gaps(a, 200)
    before, after = np.histogram(t, bins=[0, 100, 200])[0]
    assert before == pytest.approx(1000, rel=0.08)
    assert after == pytest.approx(6000, rel=0.04)
    assert mean_rate(a, 200) == 35


def test_seeded_runs_repeat_and_differ_by_seed():
    a = PoissonArrival(rate=5)
    assert np.array_equal(_gaps(a, 30, seed=3)[0], _gaps(a, 30, seed=3)[0])
    assert not np.array_equal(_gaps(a, 30, seed=3)[0], _gaps(a, 30, seed=4)[0])


def test_all_times_inside_the_step():
    t = arrival_times(PoissonArrival(rate=100), 2.5, np.random.default_rng(0))
    assert t.min() >= 0 and t.max() < 2.5 and np.all(np.diff(t) >= 0)


def test_sweep_changes_rate_or_users_only():
    assert with_rate(GammaArrival(rate=1, burstiness=3), 7) == GammaArrival(rate=7, burstiness=3)
    assert with_rate(ClosedLoop(concurrency=2), 8) == ClosedLoop(concurrency=8)
    with pytest.raises(ValueError, match="no single rate"):
        with_rate(TraceArrival(path="x.csv"), 2)
