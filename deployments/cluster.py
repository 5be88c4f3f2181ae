"""The Ray cluster a scenario runs on: a local one with logical GPUs, or an existing one; capacity checks.

Locally Ray gets `nodes × gpus_per_node` logical GPUs so that placement groups of GPU bundles behave
as on a GPU cluster. A deployment Ray cannot place stays PENDING for ever, so the resources are
checked before deploying.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import ray

from controllers.scenario import Resolved
from deployments.app import INGRESS_CPUS, REPLICA_CPUS
from deployments.config import ParallelConfig
from deployments.placement import Node, PlacementError, plan_nodes


class CapacityError(RuntimeError):
    """The cluster cannot hold the scenario's configurations; the message says what is short and the fix."""


def local_cpus(resolved: Resolved) -> int:
    """Logical CPUs for a local cluster: one per replica actor, ingress replica and load generator actor
    (`load.workers_on: ray`), and two for Serve itself."""
    s = resolved.scenario
    replicas = sum(c.replicas for c in s.configurations)
    return int(replicas * REPLICA_CPUS + s.server.ingress_replicas * INGRESS_CPUS + s.load.ray_cpus) + 2


def start_local_ray(resolved: Resolved, temp_dir: Path, metrics_port: int | None = None) -> str:
    """Start a fresh local Ray owned by this process; returns its GCS address."""
    hw = resolved.scenario.hardware
    port = resolved.scenario.server.metrics_port if metrics_port is None else metrics_port
    temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(address="local", num_cpus=local_cpus(resolved), num_gpus=hw.total_gpus, include_dashboard=False,
             _metrics_export_port=port, _temp_dir=str(temp_dir.resolve()), log_to_driver=False,
             configure_logging=False,
             # replicas report metrics every second (Ray's default: 10 s), so the controller sees changes soon
             _system_config={"metrics_report_interval_ms": 1000})
    return str(ray.get_runtime_context().gcs_address)


def connect(address: str | None = None) -> None:
    """Attach to an existing cluster (`address`, else RAY_ADDRESS)."""
    if not ray.is_initialized():
        ray.init(address=address or os.environ["RAY_ADDRESS"], log_to_driver=False)


@dataclass(frozen=True)
class Capacity:
    free_gpus: float
    free_cpus: float
    node_gpus: list[float]  # total GPUs of each alive node


def cluster_capacity(credit: dict[str, float] | None = None) -> Capacity:
    """Free resources now, plus `credit` (what a deployment about to be replaced holds)."""
    free = ray.available_resources()
    extra = credit or {}
    nodes = [n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    return Capacity(free_gpus=free.get("GPU", 0.0) + extra.get("GPU", 0.0),
                    free_cpus=free.get("CPU", 0.0) + extra.get("CPU", 0.0), node_gpus=nodes)


def capacity_problems(configs: list[ParallelConfig], cap: Capacity, ingress_replicas: int = 1) -> list[str]:
    """Why `configs` cannot all be placed on a cluster with `cap` (empty list: they fit)."""
    problems = []
    need_gpus = sum(c.gpus for c in configs)
    if need_gpus > cap.free_gpus:
        parts = ", ".join(f"{c.name}: {c.gpus}" for c in configs)
        problems.append(f"the configurations need {need_gpus} GPUs ({parts}) but the cluster has "
                        f"{cap.free_gpus:g} available; add GPUs/nodes or remove configurations")
    largest = max(cap.node_gpus, default=0.0)
    for c in configs:
        if not c.spread_pp_over_nodes and c.gpus_per_replica > largest:
            problems.append(f"{c.name}: a replica needs {c.gpus_per_replica} GPUs on one node but the largest node "
                            f"has {largest:g}; set spread_pp_over_nodes: true or lower tp×pp")
    if not problems:
        try:  # enough in total, but can every replica (spread: every TP group) have a node of its own?
            plan_nodes(configs, [Node(str(i), g) for i, g in enumerate(cap.node_gpus) if g > 0])
        except PlacementError as e:
            problems.append(str(e))
    need_cpus = sum(c.replicas for c in configs) * REPLICA_CPUS + ingress_replicas * INGRESS_CPUS
    if need_cpus > cap.free_cpus:
        problems.append(f"the replicas and the ingress need {need_cpus:g} CPUs but the cluster has "
                        f"{cap.free_cpus:g} available; add CPUs")
    return problems


def check_capacity(resolved: Resolved, credit: dict[str, float] | None = None) -> None:
    problems = capacity_problems(resolved.scenario.configurations, cluster_capacity(credit),
                                 resolved.scenario.server.ingress_replicas)
    if problems:
        raise CapacityError(f"{resolved.source}: cannot deploy: " + "; ".join(problems))
