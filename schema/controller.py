"""Configuration of the live controller (the scenario's `controller:` section)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ControllerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["observe", "best-per-class", "proportional"] = "best-per-class"
    interval_s: float = Field(default=2.0, gt=0, description="seconds between scoreboard updates")
    window_s: float = Field(default=20.0, gt=0, description="sliding window of the PromQL queries")
    min_samples: int = Field(default=10, ge=1, description="requests needed before judging a pair")
    hysteresis: float = Field(default=0.1, ge=0, description="relative goodput margin needed to switch")
    min_dwell_s: float = Field(default=10.0, ge=0, description="minimum time between switches of a class")
    explore_share: float = Field(
        default=0.1, ge=0, lt=1, description="share of each class kept on other configurations to measure them"
    )
