"""Which configurations can serve right now: Serve's own replica states, for the controller's drain."""

from collections.abc import Iterable

from ray import serve
from ray.serve._private.common import ReplicaState

from deployments.app_args import config_app_name, server_deployment_name


def unhealthy_configs(configs: Iterable[str]) -> set[str]:
    """The configurations with no RUNNING replica (dead, restarting, or not deployed)."""
    apps = serve.status().applications
    out = set()
    for name in configs:
        app = apps.get(config_app_name(name))
        d = app.deployments.get(server_deployment_name(name)) if app is not None else None
        if d is None or d.replica_states.get(ReplicaState.RUNNING, 0) == 0:
            out.add(name)
    return out
