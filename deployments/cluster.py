"""The Ray cluster a scenario runs on: a local one, or an existing one; capacity checks.

A local Ray advertises the GPUs the engine will use (`local_gpus`): the simulated engine's are logical,
`nodes × gpus_per_node` of them, so that placement groups of GPU bundles behave as on a GPU cluster; real
vLLM's are the machine's own, as Ray finds them, for each rank opens the device Ray assigns it (on a
machine without GPUs only vLLM's CPU build runs, and logical GPUs then only reserve its ranks). A
deployment Ray cannot place stays PENDING for ever, so the resources are checked before deploying. A
local Ray listens on loopback only (see `_single_node`). A driver attaching to a cluster ships the
testbed's code and the model download's credentials to every node (`cluster_runtime_env`).
"""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray._private import ray_constants

from deployments.app import INGRESS_CPUS, REPLICA_CPUS
from deployments.listening import is_loopback
from deployments.local_gpus import detected_gpus, local_gpus, local_run_problems
from deployments.placement import Node, PlacementError, plan_nodes
from deployments.resolve import Resolved
from schema.deployment import ParallelConfig

# What a Ray worker on any node imports to run the testbed's actors and tasks (pyproject's packages).
CODE_PACKAGES = ("schema", "monitoring", "loadgen", "deployments", "controllers")
# Credentials the model download needs on every node (as Ray Serve LLM's ENV_VARS_TO_PROPAGATE,
# ray/llm/_internal/serve/constants.py). Ray keeps a runtime env's variables in its job and actor tables.
FORWARDED_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


class CapacityError(RuntimeError):
    """The cluster cannot hold the scenario's configurations; the message says what is short and the fix."""


def local_cpus(resolved: Resolved) -> int:
    """Logical CPUs for a local cluster: one per replica actor, ingress replica and load generator actor
    (`load.workers_on: ray`), and two for Serve itself."""
    s = resolved.scenario
    replicas = sum(c.num_replicas for c in s.configurations)
    return int(replicas * REPLICA_CPUS + s.server.ingress_replicas * INGRESS_CPUS + s.load.ray_cpus) + 2


LOOPBACK = "127.0.0.1"
# Ray's switch for "this machine may join a multi-node cluster"; off (Ray's default on macOS and Windows),
# Ray takes loopback as the node IP and binds its servers there. It is read when Ray is imported.
_SINGLE_NODE_ENV = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR


@contextlib.contextmanager
def _single_node() -> Iterator[None]:
    """Ray's single-node mode while a local Ray starts or a driver attaches to one: loopback node IP.

    Ray 2.60 replaces a loopback node IP (`_node_ip_address`, `ray start --node-ip-address`) and a
    loopback cluster address by the host's routable address unless multi-node clusters are off. The
    environment variable reaches the processes Ray starts (GCS, raylet, agents and, through the raylet,
    every worker); this process imported Ray already, so its copy of the setting is switched as well.
    Both are restored afterwards, so that a later `connect` to a real cluster is unaffected."""
    saved_env, saved_flag = os.environ.get(_SINGLE_NODE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_SINGLE_NODE_ENV, None)
        else:
            os.environ[_SINGLE_NODE_ENV] = saved_env


def start_local_ray(resolved: Resolved, temp_dir: Path, metrics_port: int | None = None) -> str:
    """Start a fresh local Ray owned by this process, listening on loopback; returns its GCS address.
    CapacityError when the scenario cannot run on this machine (`local_run_problems`)."""
    detected = detected_gpus()
    problems = local_run_problems(resolved, detected)
    if problems:
        raise CapacityError(f"{resolved.source}: cannot run here: " + "; ".join(problems))
    port = resolved.scenario.server.metrics_port if metrics_port is None else metrics_port
    temp_dir.mkdir(parents=True, exist_ok=True)
    with _single_node():
        ray.init(address="local", _node_ip_address=LOOPBACK, num_cpus=local_cpus(resolved),
                 num_gpus=local_gpus(resolved, detected), include_dashboard=False, _metrics_export_port=port,
                 _temp_dir=str(temp_dir.resolve()), log_to_driver=False, configure_logging=False,
                 # replicas report metrics every second (Ray's default: 10 s), so the controller sees changes soon
                 _system_config={"metrics_report_interval_ms": 1000})
    return str(ray.get_runtime_context().gcs_address)


def cluster_runtime_env() -> dict[str, Any]:
    """The runtime env of a driver attached to a cluster: the testbed's packages (CODE_PACKAGES, uploaded
    once and unpacked on every node that runs its actors or tasks, Serve's replicas and vLLM's ranks
    included) and the model download's credentials (FORWARDED_ENV) when this shell has them."""
    root = Path(__file__).resolve().parents[1]
    env: dict[str, Any] = {"py_modules": [str(root / p) for p in CODE_PACKAGES], "excludes": ["__pycache__"]}
    forwarded = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    if forwarded:
        env["env_vars"] = forwarded
    return env


def connect(address: str | None = None) -> None:
    """Attach to an existing cluster (`address`, else RAY_ADDRESS) with the testbed's code and credentials
    (`cluster_runtime_env`); to a local one at a loopback address (what start_local_ray returns) in
    single-node mode."""
    if not ray.is_initialized():
        target = address or os.environ["RAY_ADDRESS"]
        with _single_node() if is_loopback(target.rsplit(":", 1)[0]) else contextlib.nullcontext():
            ray.init(address=target, log_to_driver=False, runtime_env=cluster_runtime_env())


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
        for g in c.groups:
            if not g.spread_pp_over_nodes and g.gpus_per_replica > largest:
                problems.append(f"{c.name}: a {g.role + ' ' if g.role else ''}replica needs {g.gpus_per_replica} GPUs "
                                f"on one node but the largest node has {largest:g}; set spread_pp_over_nodes: true or "
                                f"lower {g.field}tp×pp")
    if not problems:
        try:  # enough in total, but can every replica (spread: every TP group) have a node of its own?
            plan_nodes(configs, [Node(str(i), g) for i, g in enumerate(cap.node_gpus) if g > 0])
        except PlacementError as e:
            problems.append(str(e))
    need_cpus = sum(c.num_replicas for c in configs) * REPLICA_CPUS + ingress_replicas * INGRESS_CPUS
    if need_cpus > cap.free_cpus:
        problems.append(f"the replicas and the ingress need {need_cpus:g} CPUs but the cluster has "
                        f"{cap.free_cpus:g} available; add CPUs")
    return problems


def check_capacity(resolved: Resolved, credit: dict[str, float] | None = None) -> None:
    problems = capacity_problems(resolved.scenario.configurations, cluster_capacity(credit),
                                 resolved.scenario.server.ingress_replicas)
    if problems:
        raise CapacityError(f"{resolved.source}: cannot deploy: " + "; ".join(problems))
