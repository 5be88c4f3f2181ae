"""Short-horizon forecasts of a series of (time, value): one registry of pure predictors, looked up by the
settings' `kind` (schema/controller.py: constant, ewma, holt), and the forecast of each class's traffic.

A predictor sees the samples in time order and returns the value `horizon_s` seconds after the last one.
Rates and lengths are never negative, so neither is a forecast.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from controllers.scoreboard import QUANTILES, ClassTraffic, Lengths, Quantiles
from schema.controller import ConstantForecast, EwmaForecast, Forecast, HoltForecast

Series = Sequence[tuple[float, float]]
Predict = Callable[[Any, Sequence[float], Sequence[float], float], float]

_PREDICTORS: dict[str, Predict] = {}


def predictor(kind: str) -> Callable[[Predict], Predict]:
    def register(fn: Predict) -> Predict:
        _PREDICTORS[kind] = fn
        return fn
    return register


def forecast(settings: Forecast, series: Series, horizon_s: float | None = None) -> float | None:
    """The value `horizon_s` (default: the settings') after the series' last sample; None for an empty series."""
    if not series:
        return None
    times, values = zip(*sorted(series), strict=True)
    h = settings.horizon_s if horizon_s is None else horizon_s
    return max(0.0, _PREDICTORS[settings.kind](settings, times, values, h))


@predictor("constant")
def _constant(s: ConstantForecast, times: Sequence[float], values: Sequence[float], horizon_s: float) -> float:
    return values[-1]


@predictor("ewma")
def _ewma(s: EwmaForecast, times: Sequence[float], values: Sequence[float], horizon_s: float) -> float:
    """level ← α·value + (1 − α)·level from the first sample on. On a ramp rising by d per sample it settles
    d·(1 − α)/α below the last value: the lag of a flat forecast."""
    level = values[0]
    for v in values[1:]:
        level = s.alpha * v + (1 - s.alpha) * level
    return level


@predictor("holt")
def _holt(s: HoltForecast, times: Sequence[float], values: Sequence[float], horizon_s: float) -> float:
    """Holt's linear method with the trend per second (samples may be unevenly spaced): level and trend start
    from the first two samples, so a straight line is extrapolated exactly."""
    if len(values) == 1:
        return values[0]
    level = values[0]
    trend = _slope(times[0], values[0], times[1], values[1])
    for i in range(1, len(values)):
        dt = times[i] - times[i - 1]
        previous = level
        level = s.alpha * values[i] + (1 - s.alpha) * (level + trend * dt)
        if dt > 0:
            trend = s.beta * (level - previous) / dt + (1 - s.beta) * trend
    return level + trend * horizon_s


def _slope(t0: float, v0: float, t1: float, v1: float) -> float:
    return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


def forecast_traffic(history: Sequence[tuple[float, Mapping[str, ClassTraffic]]], settings: Forecast,
                     horizon_s: float | None = None) -> dict[str, ClassTraffic]:
    """Each class's traffic `horizon_s` ahead of the last reading, every figure forecast from its own series: a
    class missing from a reading arrived at rate 0 then; a length missing from it was unknown then."""
    classes = sorted({k for _, reading in history for k in reading})
    return {k: _ahead(k, [(t, reading.get(k)) for t, reading in history], settings, horizon_s) for k in classes}


def _ahead(cls: str, readings: Sequence[tuple[float, ClassTraffic | None]], settings: Forecast,
           horizon_s: float | None) -> ClassTraffic:
    def ahead(series: Iterable[tuple[float, float | None]]) -> float | None:
        return forecast(settings, [(t, v) for t, v in series if v is not None], horizon_s)

    def lengths(which: str) -> Lengths:
        seen: list[tuple[float, Lengths]] = [(t, getattr(c, which)) for t, c in readings if c is not None]
        return Lengths(ahead((t, x.mean) for t, x in seen),
                       Quantiles(*(ahead((t, x.quantiles.at(q)) for t, x in seen) for q in QUANTILES)))
    rate = ahead((t, c.rate if c is not None else 0.0) for t, c in readings) or 0.0
    return ClassTraffic(cls, rate, lengths("prompt_tokens"), lengths("output_tokens"))
