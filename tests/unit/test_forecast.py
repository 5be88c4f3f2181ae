"""Forecasts with answers known from arithmetic: a constant stays, EWMA lags a ramp by α's known amount, Holt
extrapolates a ramp exactly; the per-class traffic forecast reads each figure's own series."""

import pytest

from controllers.forecast import forecast, forecast_traffic
from controllers.scoreboard import ClassTraffic, Lengths, Quantiles
from schema.controller import ConstantForecast, EwmaForecast, HoltForecast

KINDS = [ConstantForecast(), EwmaForecast(alpha=0.3), HoltForecast(alpha=0.4, beta=0.2)]


def ramp(n: int, start: float = 10.0, per_s: float = 0.5, every_s: float = 10.0) -> list[tuple[float, float]]:
    return [(i * every_s, start + per_s * i * every_s) for i in range(n)]


@pytest.mark.parametrize("settings", KINDS, ids=lambda s: s.kind)
def test_a_constant_stays(settings: ConstantForecast | EwmaForecast | HoltForecast) -> None:
    series = [(t, 4.2) for t in range(0, 300, 30)]
    assert forecast(settings, series) == pytest.approx(4.2)
    assert forecast(settings, series[:1], horizon_s=600) == pytest.approx(4.2)   # one sample: nothing but it
    assert forecast(settings, []) is None


def test_holt_extrapolates_a_ramp_and_constant_and_ewma_do_not() -> None:
    series = ramp(12)                      # 10 req/s rising by 0.5 per second, read every 10 s: last 65 at 110 s
    assert forecast(HoltForecast(alpha=0.4, beta=0.2), series, horizon_s=60) == pytest.approx(65 + 0.5 * 60)
    assert forecast(ConstantForecast(), series, horizon_s=60) == 65


def test_ewma_lags_a_ramp_by_its_known_amount() -> None:
    """level_n = v_n − d(1 − α)/α · (1 − (1 − α)^n) for a ramp rising by d per sample from level_0 = v_0."""
    alpha, d, n = 0.25, 5.0, 60
    series = ramp(n + 1)                   # d = 0.5/s × 10 s per sample
    lag = d * (1 - alpha) / alpha * (1 - (1 - alpha) ** n)
    assert forecast(EwmaForecast(alpha=alpha), series) == pytest.approx(series[-1][1] - lag)
    assert lag == pytest.approx(15.0, abs=1e-6)


def test_holt_follows_unevenly_spaced_samples_and_never_forecasts_below_zero() -> None:
    uneven = [(0.0, 100.0), (5.0, 95.0), (20.0, 80.0), (21.0, 79.0), (40.0, 60.0)]   # −1 per second
    holt = HoltForecast(alpha=0.5, beta=0.5)
    assert forecast(holt, uneven, horizon_s=30) == pytest.approx(30.0)
    assert forecast(holt, uneven, horizon_s=120) == 0.0
    assert forecast(holt, list(reversed(uneven)), horizon_s=30) == pytest.approx(30.0)   # taken in time order


def test_the_traffic_forecast_takes_each_figure_from_its_own_series() -> None:
    def reading(rate: float, prompt: float | None) -> dict[str, ClassTraffic]:
        chat = ClassTraffic("chat", rate, Lengths(prompt, Quantiles(p90=None if prompt is None else 2 * prompt)))
        return {"chat": chat} if rate else {}
    history = [(0.0, reading(1.0, 100.0)), (10.0, reading(2.0, None)), (20.0, reading(3.0, 120.0)),
               (30.0, reading(0.0, None))]
    ahead = forecast_traffic(history, ConstantForecast())
    assert ahead["chat"].rate == 0.0                           # absent from the last reading: nothing arrived
    assert ahead["chat"].prompt_tokens.mean == 120.0           # the last length known
    assert ahead["chat"].prompt_tokens.quantiles.p90 == 240.0 and ahead["chat"].output_tokens.mean is None
    holt = forecast_traffic(history[:3], HoltForecast(alpha=1.0, beta=1.0), horizon_s=10)
    assert holt["chat"].rate == pytest.approx(4.0)             # +0.1 req/s per second, 10 s on
