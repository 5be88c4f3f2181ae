"""The JSON-serialisable arguments of the Serve applications (what `serve deploy` configs carry), and their
names: the front application `parallax` (the ingress and the routing store), and one application per
configuration, `parallax-<configuration>`, holding its LLMServer deployment `llm-<configuration>`."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from deployments.resolve import Resolved, parse_scenario

APP_NAME = "parallax"
INGRESS_NAME = "ingress"
ROUTING_STORE_NAME = "routing-store"


CONFIG_APP_PREFIX = f"{APP_NAME}-"
# How Serve names a replica (its actor, its placement group): PREFIX + app#deployment#…
REPLICA_NAME_PREFIX = "SERVE_REPLICA::"


def server_deployment_name(config: str) -> str:
    return f"llm-{config}"


def config_app_name(config: str) -> str:
    """The Serve application that holds one configuration (added and deleted on its own)."""
    return f"{CONFIG_APP_PREFIX}{config}"


def is_config_app(app_name: str) -> bool:
    return app_name.startswith(CONFIG_APP_PREFIX)


def replica_name_prefix(config: str) -> str:
    """The start of the name of every replica actor of `config`, and of each one's placement group."""
    return f"{REPLICA_NAME_PREFIX}{config_app_name(config)}#{server_deployment_name(config)}#"


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
