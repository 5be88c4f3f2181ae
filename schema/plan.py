"""The `plan:` section of a scenario written by `parallax plan --write-scenario`: which configurations make up
each planned deployment, what the planner predicted for it, and how a live run splits the traffic among them
so that every deployment is measured on the same load."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlannedPool(_Strict):
    config: str = Field(description="the configuration (under `configurations:`) that is this pool")
    classes: list[str] = Field(min_length=1, description="the SLA classes the deployment routes to this pool")


class PlannedDeployment(_Strict):
    rank: int = Field(gt=0, description="the planner's rank (1 = best for the objective)")
    label: str
    gpus: int = Field(gt=0)
    max_rate: float = Field(ge=0, description="predicted highest total rate meeting every SLO (req/s, engine clock)")
    max_rate_std: float = Field(default=0.0, ge=0, description="spread of that prediction over seeds")
    pools: list[PlannedPool] = Field(min_length=1)
    predicted_steps: list[bool] = Field(
        default_factory=list, description="per step of the load: whether the simulator, offline, has every class "
        "meet its attainment target under the same load (empty: judged by max_rate)")

    @property
    def configs(self) -> list[str]:
        return [p.config for p in self.pools]

    def pool_of(self, sla_class: str) -> str:
        return next(p.config for p in self.pools if sla_class in p.classes)


class PlanSection(_Strict):
    """Planned deployments side by side; each class of each step of the load goes to every deployment in
    proportion to its `split` weight (equal, or by GPUs when the objective is per GPU)."""

    objective: Literal["max-rate", "goodput-per-gpu", "min-gpus"]
    split: Literal["equal", "per-gpu"] = "equal"
    deployments: list[PlannedDeployment] = Field(min_length=1)

    def weight(self, d: PlannedDeployment) -> float:
        """Share of every class's requests that deployment `d` receives."""
        total = sum(self.unit(x) for x in self.deployments)
        return self.unit(d) / total

    def unit(self, d: PlannedDeployment) -> float:
        return float(d.gpus) if self.split == "per-gpu" else 1.0

    def weights(self, classes: list[str]) -> dict[str, dict[str, float]]:
        """Routing weights: each class to the pool of every deployment that serves it, by the split."""
        return {c: {d.pool_of(c): self.weight(d) for d in self.deployments} for c in classes}
