"""Which configurations can serve right now: Serve's own replica states, for the controller's drain."""

from collections.abc import Iterable

from ray import serve
from ray.serve._private.common import ReplicaState

from deployments.app_args import APP_NAME, server_deployment_name


def unhealthy_configs(configs: Iterable[str], app_name: str = APP_NAME) -> set[str]:
    """The configurations with no RUNNING replica (dead, restarting, or not deployed)."""
    names = list(configs)
    app = serve.status().applications.get(app_name)
    if app is None:
        return set(names)
    out = set()
    for name in names:
        d = app.deployments.get(server_deployment_name(name))
        if d is None or d.replica_states.get(ReplicaState.RUNNING, 0) == 0:
            out.add(name)
    return out
