"""Configuration of the live controller (the scenario's `controller:` section).

Every time here is in wall seconds, as the controller runs; the rates it reads are put on the engine's clock.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConstantForecast(_Strict):
    """The last value stays: no smoothing, no trend."""

    kind: Literal["constant"] = "constant"
    horizon_s: float = Field(default=120.0, gt=0, description="how far ahead to forecast, seconds")


class EwmaForecast(_Strict):
    """Exponentially weighted moving average: each new sample weighs `alpha`; flat ahead (no trend)."""

    kind: Literal["ewma"] = "ewma"
    horizon_s: float = Field(default=120.0, gt=0, description="how far ahead to forecast, seconds")
    alpha: float = Field(default=0.5, gt=0, le=1, description="weight of each new sample")


class HoltForecast(_Strict):
    """Holt's linear trend: the level weighs each new sample by `alpha`, the trend each new slope by `beta`;
    the forecast extrapolates the trend `horizon_s` ahead (never below 0)."""

    kind: Literal["holt"] = "holt"
    horizon_s: float = Field(default=120.0, gt=0, description="how far ahead to forecast, seconds")
    alpha: float = Field(default=0.5, gt=0, le=1, description="weight of each new sample in the level")
    beta: float = Field(default=0.3, gt=0, le=1, description="weight of each new slope in the trend")


Forecast = Annotated[ConstantForecast | EwmaForecast | HoltForecast, Field(discriminator="kind")]


class CorrectionConfig(_Strict):
    """How the simulator is corrected by what it sees: per running shape (TP, PP), measured ÷ predicted TTFT and
    TPOT, bounded and smoothed across re-plans."""

    min_factor: float = Field(default=0.5, gt=0, le=1, description="lowest correction factor")
    max_factor: float = Field(default=2.0, ge=1, description="highest correction factor")
    smoothing: float = Field(default=0.3, gt=0, le=1,
                             description="weight of each interval's new ratio in the factor (EWMA of its log)")
    min_samples: int = Field(default=20, ge=1,
                             description="requests a shape needs in an interval before its ratio counts")


class RepartitionConfig(_Strict):
    """The re-partitioning policy's knobs: how often it re-plans the GPU budget, and when a move is worth it."""

    interval_s: float = Field(default=30.0, gt=0, description="seconds between re-plans")
    gpus: int | None = Field(default=None, gt=0,
                             description="the GPUs it re-partitions (default: the whole hardware)")
    min_gain: float = Field(default=0.15, ge=0, description="relative goodput gain over staying put, the "
                            "transition's cost counted, that a move needs")
    min_dwell_s: float = Field(default=60.0, gt=0, description="how long a gain must hold before a move, and the "
                               "least time between two moves")
    max_moves_per_hour: int = Field(default=6, ge=1, description="at most this many moves in any hour")
    plan_budget_s: float = Field(default=10.0, gt=0, description="planner time one re-plan may take")
    forecast: Forecast = Field(default_factory=HoltForecast, description="the per-class rate and length predictor")
    correction: CorrectionConfig = Field(default_factory=CorrectionConfig)
    compare_offline: bool = Field(default=True, description="after a run with load.phases, replay its requests "
                                  "offline on the best static deployment and the per-phase oracle for the report "
                                  "(`parallax compare-shift`; minutes of planning)")

    @model_validator(mode="after")
    def _consistent(self) -> "RepartitionConfig":
        if self.min_dwell_s < self.interval_s:
            raise ValueError(f"min_dwell_s ({self.min_dwell_s:g} s) is shorter than interval_s ({self.interval_s:g} s):"
                             " a gain is seen once per re-plan, so it cannot be seen to hold; raise min_dwell_s to at "
                             "least interval_s")
        if self.plan_budget_s > self.interval_s:
            raise ValueError(f"plan_budget_s ({self.plan_budget_s:g} s) exceeds interval_s ({self.interval_s:g} s): "
                             "re-plans would overlap; lower plan_budget_s or raise interval_s")
        if self.forecast.horizon_s < self.interval_s:
            raise ValueError(f"forecast.horizon_s ({self.forecast.horizon_s:g} s) is shorter than interval_s "
                             f"({self.interval_s:g} s): a forecast must reach the next re-plan; raise horizon_s")
        return self


class ControllerConfig(_Strict):
    policy: Literal["observe", "best-per-class", "proportional", "repartition"] = "best-per-class"
    interval_s: float = Field(default=2.0, gt=0, description="seconds between scoreboard updates")
    window_s: float = Field(default=20.0, gt=0, description="sliding window of the PromQL queries")
    min_samples: int = Field(default=10, ge=1, description="requests needed before judging a pair")
    hysteresis: float = Field(default=0.1, ge=0, description="relative goodput margin needed to switch")
    min_dwell_s: float = Field(default=10.0, ge=0, description="minimum time between switches of a class")
    explore_share: float = Field(
        default=0.1, ge=0, lt=1, description="share of each class kept on other configurations to measure them"
    )
    repartition: RepartitionConfig = Field(
        default_factory=RepartitionConfig, description="policy repartition: re-plan the GPU budget (TP/PP degrees, "
        "replicas, pools) as the traffic shifts")

    @model_validator(mode="after")
    def _repartition(self) -> "ControllerConfig":
        # (compared with the defaults, not with what the file set: a run folder's scenario.yaml writes them all)
        if self.repartition != RepartitionConfig() and self.policy != "repartition":
            raise ValueError(f"repartition: only policy repartition reads it, not {self.policy}; set "
                             "controller.policy: repartition, or remove controller.repartition")
        if self.policy == "repartition" and self.repartition.interval_s < self.interval_s:
            raise ValueError(f"repartition.interval_s ({self.repartition.interval_s:g} s) is shorter than interval_s "
                             f"({self.interval_s:g} s), the scoreboard's: a re-plan needs a fresh scoreboard; raise "
                             "repartition.interval_s")
        return self
