"""The fleet: the serving set changes while it serves, nothing dropped. The executor of the transition steps
(deployments/steps.py) over Ray Serve; call after `deploy` (deploy.py), on the driver connected to the cluster.

Every configuration is a Serve application of its own (`parallax-<name>`, app_args.py) beside the front
application (ingress replicas and the routing store). The routing store holds the serving set — the live
configurations — and the weights, versioned together (routing_store.py); each ingress replica follows it.

What each function guarantees when it returns (on failure it raises FleetError(step, reason) and the set is as
the reason says; nothing it started is left half-way, except where the reason says so):
- `deploy_config(resolved, config, timeout_s)`: `config`'s application runs with every replica healthy, and
  every live ingress replica lists it (has its handle) with weight 0 in every class. Its GPUs are reserved.
  A configuration already live, or more GPUs than the cluster has free, is refused before anything starts; a
  start that fails or outlasts `timeout_s` deletes the application again. Returns the seconds taken: on vLLM,
  the measured start (startup.start_seconds takes it).
- `scale_config(name, replicas, timeout_s)`: `name` runs `replicas` healthy replicas (in place: the others
  kept serving; those removed finished their in-flight requests, Serve's graceful stop), and the store's spec
  says so.
- `route(weights, timeout_s)`: the rows given are in force on every live ingress replica (a row with no weight
  > 0 holds its class: its requests wait at the ingress, bounded, hold.py). A weight > 0 on a configuration
  that is not live is refused, the routing unchanged.
- `drain_config(name, timeout_s)`: `name` has weight 0 everywhere (else refused) and no request in flight in
  its replicas (Serve's own count per replica), or FleetError after `timeout_s` with the count left.
- `remove_config(name, timeout_s)`: `name` is out of the serving set on every ingress replica (refused while
  routed), its application deleted (its replicas' graceful stop ran), and none of its placement groups is
  left: its GPUs are free for the next `deploy_config`.
- `execute(step, resolved, timeout_s)`: one step by the function of its name; the seconds it took.
"""

import time
from collections.abc import Callable, Mapping
from typing import Any

import ray
from ray import serve
from ray.serve._private.common import DeploymentID
from ray.serve.context import _get_global_client
from ray.serve.handle import DeploymentHandle
from ray.serve.schema import ApplicationStatus

from deployments.app_args import APP_NAME, ROUTING_STORE_NAME, config_app_name, server_deployment_name
from deployments.deploy import DeployError, ProgressCallback, config_placements, config_target, delete_apps, wait_ready
from deployments.replicas import ongoing_requests, running_replicas
from deployments.resolve import Resolved
from deployments.routing import RoutingError, Weights, routing_error_message
from deployments.routing_store import Routing, UpdateResult
from deployments.steps import Deploy, Drain, Remove, Route, Scale, Step
from schema.deployment import ParallelConfig

POLL_S = 0.1   # how often a wait looks again


class FleetError(RuntimeError):
    """A step the fleet could not take; `step` is the step (or the function's name), `reason` one line why."""

    def __init__(self, step: Step | str, reason: str):
        self.step = step
        self.reason = reason
        super().__init__(f"{step if isinstance(step, str) else step.line}: {reason}")


def store() -> DeploymentHandle:
    """The routing store of the running front application."""
    return serve.get_deployment_handle(ROUTING_STORE_NAME, app_name=APP_NAME)


def serving_set() -> Routing:
    """The routing in force: the live configurations and the weights, with their version."""
    routing: Routing = store().routing.remote().result()
    return routing


def live_set_reader(timeout_s: float = 5.0) -> Callable[[], tuple[list[str], Weights]]:
    """A reader of the live configurations and the routing in force (what the controller follows every step),
    over one handle to the store."""
    handle = store()

    def read() -> tuple[list[str], Weights]:
        routing: Routing = handle.routing.remote().result(timeout_s=timeout_s)
        return list(routing.configs), routing.weights
    return read


def _publish(what: str, call: Any, timeout_s: float) -> UpdateResult:
    """Run a store change (`call`: a DeploymentResponse) and wait until every live ingress replica applied it."""
    try:
        result: UpdateResult = call.result()
    except RoutingError as e:
        raise FleetError(what, routing_error_message(e)) from None
    if result.applied < result.replicas:
        result = store().applied.remote(result.routing.version, timeout_s).result()
        if result.applied < result.replicas:
            raise FleetError(what, f"{result.replicas - result.applied} of {result.replicas} ingress replicas did "
                             f"not apply routing version {result.routing.version} within {timeout_s:g} s")
    return result


def _free_gpus() -> float:
    return float(ray.available_resources().get("GPU", 0.0))


def deploy_config(resolved: Resolved, config: ParallelConfig, timeout_s: float,
                  on_progress: ProgressCallback | None = None) -> float:
    """Start `config` as an application of its own, wait until healthy, then list it live (weight 0) on every
    ingress replica; the seconds taken (module docstring)."""
    what = f"deploy {config.name}"
    t0 = time.monotonic()
    if config.name in serving_set().configs or config_app_name(config.name) in serve.status().applications:
        raise FleetError(what, f"configuration {config.name} is already live; remove it first or give the new "
                         "shape another name")
    if config.gpus > _free_gpus():
        raise FleetError(what, f"needs {config.gpus} GPUs but {_free_gpus():g} are free; drain and remove a "
                         "configuration first")
    serve.run_many([config_target(resolved, config, joins=True)], wait_for_ingress_deployment_creation=False,
                   wait_for_applications_running=False)
    try:
        wait_ready(resolved, timeout_s, on_progress=on_progress, configs=[config])
    except DeployError as e:  # wait_ready deleted the application
        raise FleetError(what, str(e)) from None
    _publish(what, store().put_config.remote(config), timeout_s)
    return time.monotonic() - t0


def scale_config(name: str, replicas: int, timeout_s: float) -> float:
    """Change `name`'s replica count in place and wait until exactly that many run healthy; seconds taken."""
    what = f"scale {name} to {replicas}"
    t0 = time.monotonic()
    live = serving_set().configs
    if name not in live or replicas < 1:
        raise FleetError(what, f"configuration {name} is not live" if name not in live else "give 1 replica or more")
    client = _get_global_client()
    assert client is not None  # it raises when Serve is not running
    ray.get(client._controller.update_deployment_replicas.remote(
        DeploymentID(name=server_deployment_name(name), app_name=config_app_name(name)), replicas))
    deadline = time.monotonic() + timeout_s
    while not _scaled(name, replicas):
        if time.monotonic() > deadline:
            raise FleetError(what, f"{len(running_replicas(name))} of {replicas} replicas running after "
                             f"{timeout_s:g} s; a replica may be waiting for GPUs the cluster lacks")
        time.sleep(POLL_S)
    _publish(what, store().put_config.remote(live[name].model_copy(update={"replicas": replicas})), timeout_s)
    return time.monotonic() - t0


def _scaled(name: str, replicas: int) -> bool:
    st = serve.status().applications.get(config_app_name(name))
    d = st.deployments.get(server_deployment_name(name)) if st is not None else None
    if d is None or st is None or st.status != ApplicationStatus.RUNNING:
        return False
    states = {getattr(s, "value", s): n for s, n in d.replica_states.items()}  # str at run time
    return states.get("RUNNING", 0) == replicas and sum(states.values()) == replicas


def route(weights: Mapping[str, Mapping[str, float]], timeout_s: float = 10.0) -> float:
    """Put the rows given in force on every live ingress replica (empty rows hold their class); seconds taken."""
    t0 = time.monotonic()
    _publish("route", store().update.remote({c: dict(row) for c, row in weights.items()}, None, True), timeout_s)
    return time.monotonic() - t0


def drain_config(name: str, timeout_s: float) -> float:
    """Wait until `name` (weight 0 everywhere) has no request in flight; seconds taken."""
    what = f"drain {name}"
    t0 = time.monotonic()
    routing = serving_set()
    if name not in routing.configs:
        raise FleetError(what, f"configuration {name} is not live")
    routed = sorted(c for c, row in routing.weights.items() if row.get(name, 0) > 0)
    if routed:
        raise FleetError(what, f"{name} still serves {', '.join(routed)}; route them elsewhere first")
    deadline = t0 + timeout_s
    while (left := ongoing_requests(name)) > 0:
        if time.monotonic() > deadline:
            raise FleetError(what, f"{left} requests still in flight after {timeout_s:g} s")
        time.sleep(POLL_S)
    return time.monotonic() - t0


def remove_config(name: str, timeout_s: float = 60.0) -> float:
    """Take `name` out of the set, delete its application and wait until its placement groups are gone (its
    GPUs free); seconds taken."""
    what = f"remove {name}"
    t0 = time.monotonic()
    _publish(what, store().remove.remote(name), timeout_s)
    if config_app_name(name) in serve.status().applications:
        delete_apps([config_app_name(name)])
    deadline = t0 + timeout_s
    while config_placements([name])[name]:
        if time.monotonic() > deadline:
            raise FleetError(what, f"its placement groups were not released within {timeout_s:g} s")
        time.sleep(POLL_S)
    return time.monotonic() - t0


def execute(step: Step, resolved: Resolved, timeout_s: float) -> float:
    """Carry out one transition step (deployments/steps.py) by the function of its name; the seconds it took.
    Raises FleetError(step, reason) when the step cannot be taken or does not finish within `timeout_s`."""
    try:
        match step:
            case Deploy(config=c):
                return deploy_config(resolved, c, timeout_s)
            case Scale(name=n, replicas=r):
                return scale_config(n, r, timeout_s)
            case Route(weights=w):
                return route(w, timeout_s)
            case Drain(name=n):
                return drain_config(n, timeout_s)
            case Remove(name=n):
                return remove_config(n, timeout_s)
    except FleetError as e:
        raise FleetError(step, e.reason) from None
    raise FleetError(step, f"unknown step {type(step).__name__}")
