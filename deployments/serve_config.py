"""The Ray Serve config of a scenario's application, for `serve deploy` and KubeRay's serveConfigV2."""

from deployments.app_args import APP_NAME, AppArgs, config_app_name
from deployments.resolve import Resolved


def serve_config(r: Resolved, host: str | None = None, port: int | None = None) -> dict[str, object]:
    """A Ray Serve config (`serve deploy FILE`) that builds this scenario's applications on a cluster: the front
    (ingress, routing store) and one per configuration (no route of its own; scalable in place).

    Clients come through Serve's proxy there (KubeRay's Service points at it): the Serve controller that
    `serve deploy` starts has no direct ingress, so the ingress replicas open no ports of their own."""
    srv = r.scenario.server
    args = AppArgs.from_resolved(r).model_dump()
    args["scenario"]["server"]["direct_ingress"] = False
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host or srv.host, "port": srv.port if port is None else port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": "deployments.app:build_app",
            "args": args,
            "logging_config": {"enable_access_log": False},
        }, *({
            "name": config_app_name(c.name),
            "route_prefix": None,
            "import_path": "deployments.app:build_config_app",
            "args": args | {"config": c.name},
            "logging_config": {"enable_access_log": False},
            "external_scaler_enabled": True,
        } for c in r.scenario.configurations)],
    }
