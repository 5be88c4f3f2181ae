"""The Serve application of a scenario: one LLMServer deployment per configuration behind the ingress.

`build_app` is the importable builder that `serve deploy` configs name
(`import_path: deployments.app:build_app`, `args: {scenario: ..., base_dir: ...}`).
"""

from typing import Any, cast

from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from controllers.scenario import Resolved
from deployments.app_args import INGRESS_NAME, AppArgs, server_deployment_name
from deployments.config import ParallelConfig
from deployments.ingress import Ingress
from deployments.server import LLMServer

REPLICA_CPUS = 1.0      # the replica actor (engine loop) sits in bundle 0 with one CPU
INGRESS_CPUS = 1.0


def bundles(config: ParallelConfig) -> list[dict[str, float]]:
    """One bundle per GPU of a replica; the replica actor takes bundle 0's CPU."""
    return [{"CPU": REPLICA_CPUS, "GPU": 1.0}] + [{"GPU": 1.0}] * (config.gpus_per_replica - 1)


def strategy(config: ParallelConfig) -> str:
    """STRICT_PACK keeps a replica on one node; PACK lets PP stages spill to other nodes when asked."""
    return "PACK" if config.spread_pp_over_nodes else "STRICT_PACK"


def server_options(resolved: Resolved, config: ParallelConfig) -> dict[str, Any]:
    srv = resolved.scenario.server
    return dict(
        name=server_deployment_name(config.name),
        num_replicas=config.replicas,
        max_ongoing_requests=srv.max_ongoing_requests,
        max_queued_requests=srv.max_queued_requests,
        ray_actor_options={"num_cpus": REPLICA_CPUS, "num_gpus": 0},
        placement_group_bundles=bundles(config),
        placement_group_strategy=strategy(config),
        health_check_period_s=5.0,
    )


def ingress_options(resolved: Resolved) -> dict[str, Any]:
    """Enough room at the ingress for every configuration's ongoing + queued requests, then 503."""
    srv = resolved.scenario.server
    capacity = sum(c.replicas * srv.max_ongoing_requests + srv.max_queued_requests
                   for c in resolved.scenario.configurations)
    return dict(name=INGRESS_NAME, num_replicas=1, max_ongoing_requests=capacity + 64,
                max_queued_requests=capacity, ray_actor_options={"num_cpus": INGRESS_CPUS})


def _deployment(cls: type, options: dict[str, Any]) -> Deployment:
    return cast(Deployment, serve.deployment(cls)).options(**options)  # decorator used as a call


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder: `args` is AppArgs as a dict."""
    app_args = AppArgs.model_validate(args)
    resolved = app_args.resolve()
    plain = app_args.model_dump()
    servers = {c.name: _deployment(LLMServer, server_options(resolved, c)).bind(plain, c.name)
               for c in resolved.scenario.configurations}
    return _deployment(Ingress, ingress_options(resolved)).bind(plain, servers)
