"""Correction factors of the simulator, learnt from the hardware it runs on (pure).

Per running shape (TP, PP): measured ÷ predicted TTFT and TPOT. Each re-plan interval gives observations
(measured from the recording rules' per-configuration quantile series, predicted by the simulator at the load
the configuration saw: the caller makes both); the factor moves towards the interval's ratio as an EWMA of
its logarithm (a ratio of 2 and one of ½ are equally far from 1), bounded to [min_factor, max_factor].
The planner multiplies its predicted TTFT and TPOT of a shape by that shape's factors.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from schema.controller import CorrectionConfig

Shape = tuple[int, int]          # (tp, pp)
Metric = Literal["ttft", "tpot"]


@dataclass(frozen=True)
class Observation:
    """One interval's measurement of a figure of a shape (one configuration, class and quantile), and what the
    simulator predicted for it at the load the configuration saw; `samples`: the requests behind it."""

    tp: int
    pp: int
    metric: Metric
    measured_s: float | None
    predicted_s: float | None
    samples: int

    @property
    def shape(self) -> Shape:
        return (self.tp, self.pp)

    @property
    def ratio(self) -> float | None:
        """measured ÷ predicted, where both are positive and finite."""
        m, p = self.measured_s, self.predicted_s
        if m is None or p is None or not (m > 0 and p > 0 and math.isfinite(m) and math.isfinite(p)):
            return None
        return m / p


@dataclass(frozen=True)
class Factors:
    """Measured ÷ predicted, per figure (1: the simulator is right)."""

    ttft: float = 1.0
    tpot: float = 1.0


Corrections = Mapping[Shape, Factors]


def factors_of(corrections: Corrections, tp: int, pp: int) -> Factors:
    """A shape's factors (1 where nothing was learnt of it yet)."""
    return corrections.get((tp, pp), Factors())


def correct(previous: Corrections, observations: Iterable[Observation], settings: CorrectionConfig
            ) -> dict[Shape, Factors]:
    """The factors after one interval. Per shape and figure: the samples-weighted geometric mean of the interval's
    usable ratios, bounded, folded into the previous factor (EWMA of the log, weight `smoothing`); a shape and
    figure whose interval holds fewer than `min_samples` requests keeps its factor."""
    sums: dict[tuple[Shape, Metric], tuple[float, int]] = {}
    for o in observations:
        if (ratio := o.ratio) is not None and o.samples > 0:
            log_sum, n = sums.get((o.shape, o.metric), (0.0, 0))
            sums[(o.shape, o.metric)] = (log_sum + o.samples * math.log(ratio), n + o.samples)
    lo, hi = math.log(settings.min_factor), math.log(settings.max_factor)
    out = dict(previous)
    for (shape, metric), (log_sum, n) in sums.items():
        if n < settings.min_samples:
            continue
        ratio = min(hi, max(lo, log_sum / n))
        old = math.log(getattr(out.get(shape, Factors()), metric))
        new = (1 - settings.smoothing) * old + settings.smoothing * ratio
        out[shape] = replace(out.get(shape, Factors()), **{metric: math.exp(min(hi, max(lo, new)))})
    return out
