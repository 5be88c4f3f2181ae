"""Configuration of monitoring (the scenario's `monitoring:` section)."""

from pydantic import BaseModel, ConfigDict, Field


class MonitoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prometheus_url: str | None = Field(default=None, description="attach to this Prometheus instead")
    prometheus_port: int = Field(default=9090, ge=0, le=65535)
    scrape_interval_s: float = Field(default=1.0, gt=0)
    loadgen_metrics_port: int = Field(default=9101, ge=0, le=65535)
    controller_metrics_port: int = Field(default=9102, ge=0, le=65535)
