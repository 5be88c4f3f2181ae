"""The JSON-serialisable arguments of the Serve application (what `serve deploy` configs carry)."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from deployments.resolve import Resolved, parse_scenario

APP_NAME = "parallax"
INGRESS_NAME = "ingress"
ROUTING_STORE_NAME = "routing-store"


def server_deployment_name(config: str) -> str:
    return f"llm-{config}"


class AppArgs(BaseModel):
    """The scenario as data (so replicas on other nodes need no file), and where relative paths start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: dict[str, Any]
    base_dir: str | None = None
    source: str = "<scenario>"

    @classmethod
    def from_resolved(cls, resolved: Resolved) -> "AppArgs":
        base = Path(resolved.source).parent.resolve() if resolved.source != "<scenario>" else None
        return cls(scenario=resolved.scenario.model_dump(mode="json"),
                   base_dir=str(base) if base else None, source=resolved.source)

    def resolve(self) -> Resolved:
        return parse_scenario(self.scenario, self.source, Path(self.base_dir) if self.base_dir else None)
