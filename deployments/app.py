"""The Serve applications of a scenario: the front application (the ingress replicas, which share one routing
and one serving set through the RoutingStore) and one application per configuration (its LLMServer
deployment), so that a configuration can be added or deleted while the others serve (deployments/fleet.py).

`build_app` (the front) and `build_config_app` (one configuration) are the importable builders that
`serve deploy` configs name (`import_path: deployments.app:build_app`, `args: {scenario: ..., base_dir: ...}`;
a configuration's args add `config: NAME`).
"""

from typing import Any, cast

from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.app_args import INGRESS_NAME, ROUTING_STORE_NAME, AppArgs, server_deployment_name
from deployments.ingress import Ingress
from deployments.placement import replica_placement
from deployments.resolve import Resolved
from deployments.routing import uniform_weights
from deployments.routing_store import RoutingStore
from deployments.server import LLMServer
from schema.deployment import ParallelConfig

REPLICA_CPUS = 1.0      # the replica actor (engine loop) sits in bundle 0 with one CPU
INGRESS_CPUS = 1.0
# Ray Serve settings of the live path, each kept because bench/path_cost.py showed it helps
# (deployments/README.md, "Live-path capacity"): user code and the handle's router on the replica's own
# event loop, no thread hop per request and per streamed event ...
SERVE_REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
# ... and the ingress replicas serve HTTP themselves (for the Serve controller too): no proxy hop either
# way. No load balancer needs time to deregister a replica, so none drains for the default 30 s.
DIRECT_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0"}


# How long Serve lets a vLLM replica stop before killing it (its default is 20 s): the engine core and its
# ranks took 15 s to stop for TP2 on the CPU build at load average ~50 (measured), and a replica killed
# mid-shutdown orphans them with their shared memory.
VLLM_SHUTDOWN_S = 60.0


def _env(env: dict[str, str]) -> dict[str, Any]:
    return {"runtime_env": {"env_vars": env}}


def server_options(resolved: Resolved, config: ParallelConfig) -> dict[str, Any]:
    """Serve counts `max_queued_requests` per caller: each ingress replica queues its share of the total."""
    srv = resolved.scenario.server
    return dict(
        name=server_deployment_name(config.name),
        num_replicas=config.replicas,
        max_ongoing_requests=srv.max_ongoing_requests,
        max_queued_requests=-(-srv.max_queued_requests // srv.ingress_replicas),
        ray_actor_options={"num_cpus": REPLICA_CPUS, "num_gpus": 0, **_env(SERVE_REPLICA_ENV)},
        **replica_placement(config, REPLICA_CPUS).as_deployment_options(),
        health_check_period_s=5.0,
        **({"graceful_shutdown_timeout_s": VLLM_SHUTDOWN_S} if resolved.scenario.engine.kind == "vllm" else {}),
    )


def ingress_options(resolved: Resolved) -> dict[str, Any]:
    """Enough room at each ingress replica for every configuration's ongoing + queued requests, then 503; the
    set may change, so the room is for the largest set the GPU budget holds (a replica has at least one
    GPU), or the scenario's if larger, plus the hold queue."""
    s = resolved.scenario
    srv = s.server
    per_replica = srv.max_ongoing_requests + srv.max_queued_requests
    capacity = max(sum(c.replicas * srv.max_ongoing_requests + srv.max_queued_requests for c in s.configurations),
                   s.hardware.total_gpus * per_replica) + srv.hold_queue_size
    env = SERVE_REPLICA_ENV | (DIRECT_INGRESS_ENV if srv.direct_ingress else {})
    return dict(name=INGRESS_NAME, num_replicas=srv.ingress_replicas, max_ongoing_requests=capacity + 64,
                max_queued_requests=capacity, ray_actor_options={"num_cpus": INGRESS_CPUS, **_env(env)})


def store_options() -> dict[str, Any]:
    """One replica, no CPU reserved (it only answers the ingress replicas' polls); room for every poll."""
    return dict(name=ROUTING_STORE_NAME, num_replicas=1, max_ongoing_requests=10_000,
                ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=1.0,
                graceful_shutdown_wait_loop_s=0.2)


def _deployment(cls: type, options: dict[str, Any]) -> Deployment:
    return cast(Deployment, serve.deployment(cls)).options(**options)  # decorator used as a call


def config_app(resolved: Resolved, config: ParallelConfig, joins: bool = False) -> Application:
    """One configuration's application: its LLMServer deployment. `joins`: the replicas join a running fleet,
    so a simulated engine waits its modelled start first (deployments/startup.py)."""
    plain = AppArgs.from_resolved(resolved).model_dump()
    return _deployment(LLMServer, server_options(resolved, config)).bind(plain, config.model_dump(mode="json"), joins)


def build_config_app(args: dict[str, Any]) -> Application:
    """Serve application builder of one configuration: `args` is AppArgs as a dict plus `config` (its name)."""
    rest = dict(args)
    name = rest.pop("config")
    resolved = AppArgs.model_validate(rest).resolve()
    return config_app(resolved, next(c for c in resolved.scenario.configurations if c.name == name))


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder of the front: `args` is AppArgs as a dict. The routing store starts with
    the scenario's configurations live and every class spread evenly over them."""
    app_args = AppArgs.model_validate(args)
    resolved = app_args.resolve()
    s = resolved.scenario
    weights = uniform_weights([c.name for c in s.classes], [c.name for c in s.configurations])
    live = [c.model_dump(mode="json") for c in s.configurations]
    store = _deployment(RoutingStore, store_options()).bind(weights, live)
    return _deployment(Ingress, ingress_options(resolved)).bind(app_args.model_dump(), store)
