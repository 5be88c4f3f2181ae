"""A configuration's Serve replicas as Serve's state API lists them, and killing one as a GPU failure would.

Every lookup of a configuration's replicas goes through `config_replicas`, so where a configuration's
deployment lives (its application and deployment name) is stated once here.
"""

from dataclasses import dataclass
from typing import Any

import ray
from ray.serve._private.common import ReplicaState
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeInstanceDetails

from deployments.app_args import config_app_name, server_deployment_name

SERVE_NAMESPACE = "serve"   # where Serve names its replica actors


@dataclass(frozen=True)
class ReplicaRef:
    """One replica of a configuration: Serve's replica id (what responses name in x-parallax-replica), its
    actor, and since when it has been running (Unix time; 0 while it starts)."""

    replica_id: str
    actor_name: str
    state: str
    started: float
    pid: int | None = None

    @property
    def running(self) -> bool:
        return self.state == ReplicaState.RUNNING.value


def config_replicas(config: str) -> list[ReplicaRef]:
    """Every replica Serve has for `config` (starting, running, stopping), the longest running first."""
    client = _get_global_client()
    assert client is not None  # it raises when Serve is not running
    details = ServeInstanceDetails(**client.get_serve_details())
    app = details.applications.get(config_app_name(config))
    deployment = app.deployments.get(server_deployment_name(config)) if app is not None else None
    if deployment is None:
        return []
    refs = [ReplicaRef(r.replica_id, r.actor_name or "", r.state.value, r.start_time_s or 0.0, r.pid)
            for r in deployment.replicas]
    return sorted(refs, key=lambda r: (not r.running, r.started or float("inf"), r.replica_id))


def running_replicas(config: str) -> list[ReplicaRef]:
    """The replicas of `config` that serve now, the longest running first."""
    return [r for r in config_replicas(config) if r.running]


def kill_replica(replica: ReplicaRef) -> None:
    """Kill the replica's actor at once, without a restart of the same actor (its GPUs gone): Serve notices
    at its next health check or call and starts a replacement."""
    ray.kill(replica_actor(replica), no_restart=True)


def replica_actor(replica: ReplicaRef) -> Any:
    """The replica's Ray actor (Serve's ReplicaActor)."""
    return ray.get_actor(replica.actor_name, namespace=SERVE_NAMESPACE)


def ongoing_requests(config: str, timeout_s: float = 10.0) -> int:
    """Requests in flight in `config`'s replicas, by Serve's own count (each replica's queue length, what
    Serve's router probes; streams count until they end); a replica that does not answer counts none."""
    refs = []
    for r in config_replicas(config):
        try:
            refs.append(replica_actor(r).get_num_ongoing_requests.remote())
        except ValueError:  # the actor is gone already
            continue
    total = 0
    for ref in refs:
        try:
            total += int(ray.get(ref, timeout=timeout_s))
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            continue
    return total
