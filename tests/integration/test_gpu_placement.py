"""Every split of one 8-GPU node on a real Ray with logical GPUs, deployed as the vLLM engine would be: the
replica actor in bundle 0 of its placement group (as Serve schedules it), then one stand-in worker per rank,
started with the actor options of vLLM's Ray executor. Each stand-in reports `ray.get_gpu_ids()`,
CUDA_VISIBLE_DEVICES and its node, and from those the device vLLM's worker would open; every GPU of the node
must be opened exactly once, and TP8×PP2 must put its stages on two nodes (a head and a worker node, 8
logical GPUs each). Then vLLM's own placement-group checks and rank order run on the same groups.
See deployments/engines/vllm/GPU.md."""

import copy
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from deployments.app import server_options
from deployments.engines.vllm.args import launch_for
from deployments.engines.vllm.engine import config_task_options
from deployments.engines.vllm.model_files import on_every_node
from deployments.engines.vllm.ray_workers import replica_ranks, worker_slots
from deployments.resolve import Resolved, parse_scenario
from schema.deployment import ParallelConfig
from tests.integration.ray_cluster import LocalCluster, driver_env, local_cluster
from tests.support.gpu_splits import ONE_NODE, SPREAD

pytestmark = pytest.mark.integration

NODE_GPUS = 8
# What vLLM's Ray executor gives each worker actor (RayExecutorV2._init_executor, _get_actor_resource_kwargs,
# _build_runtime_env in vllm/v1/executor/ray_executor_v2.py; CudaPlatform.ray_noset_device_env_vars).
WORKER_GPUS = 1.0                      # VLLM_RAY_PER_WORKER_GPUS
NOSET = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"
WORKER_ENV = {"env_vars": {NOSET: "1"}}


def scenario(model: Path) -> Resolved:
    return parse_scenario({
        "name": "gpu-placement", "model": "llama-3.1-70b", "dtype": "fp8",
        "hardware": {"gpu": "h200", "gpus_per_node": NODE_GPUS, "nodes": 8},   # every split side by side
        "engine": {"kind": "vllm", "model_path": str(model)},
        "configurations": [c.model_dump() for c in [*ONE_NODE, SPREAD]],
        "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500},
                     "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 20}}],
    })


@ray.remote
class WorkerStandIn:
    """Stands in for vLLM's RayWorkerProc: reports what Ray gave it."""

    def report(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"node": ctx.get_node_id(), "gpu_ids": [int(g) for g in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


@ray.remote
def probe() -> dict[str, Any]:
    """Where the config task runs and what it sees (engine.config_task_options)."""
    return {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": [int(g) for g in ray.get_gpu_ids()]}


@ray.remote
class ReplicaStandIn:
    """Stands in for an LLMServer replica with the vllm engine: what it holds itself, then its engine's ranks
    started as vLLM's Ray executor starts them (or, without Ray's executor, the one process that runs the
    model: the engine core, a child of this actor, seeing what this actor sees)."""

    def start(self, engine_kwargs: dict[str, Any], model: str) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        pg, node = ray.util.get_current_placement_group(), ctx.get_node_id()
        tp, pp = engine_kwargs["tensor_parallel_size"], engine_kwargs["pipeline_parallel_size"]
        me = {"node": node, "gpu_ids": ray.get_gpu_ids(),
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        if engine_kwargs.get("distributed_executor_backend") != "ray":
            device = 0 if not me["cuda_visible_devices"] else int(me["cuda_visible_devices"].split(",")[0])
            return {"replica": me, "ranks": [{**me, "rank": 0, "device": device}], "config_task": None}
        slots = replica_ranks(pg, node, tp, tp * pp)
        models = on_every_node(model, sorted({s.node for s in slots}))
        config_task = ray.get(probe.options(**config_task_options(pg)).remote())
        runtime_env = copy.deepcopy(dict(ctx.runtime_env or {}))
        runtime_env.setdefault("env_vars", {})[NOSET] = "1"
        workers = [WorkerStandIn.options(
            num_cpus=0, num_gpus=WORKER_GPUS, runtime_env=runtime_env,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg,
                                                                 placement_group_bundle_index=s.bundle)).remote()
            for s in slots]
        seen = ray.get([w.report.remote() for w in workers])
        # RayExecutorV2 step 6 and Worker.init_device: a worker's local rank among its node's workers, in rank
        # order, indexes its node's physical GPU ids, sorted; with CUDA_VISIBLE_DEVICES unset that is the device.
        by_node: dict[str, list[int]] = defaultdict(list)
        for s in seen:
            by_node[s["node"]].extend(s["gpu_ids"])
        ranks, local = [], Counter[str]()
        for slot, s in zip(slots, seen, strict=True):
            ranks.append({**s, "rank": slot.rank, "slot_node": slot.node,
                          "device": sorted(by_node[s["node"]])[local[s["node"]]]})
            local[s["node"]] += 1
        for w in workers:
            ray.kill(w)
        return {"replica": me, "ranks": ranks, "config_task": config_task, "models": models}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two nodes of 8 logical GPUs. Every actor and task of the tests shares the job's runtime env (vLLM's
    worker env var included), so that each takes an idle Ray worker process where one is left."""
    with local_cluster(head_gpus=NODE_GPUS, head_cpus=NODE_GPUS + 1) as c:
        c.add_node("b", gpus=NODE_GPUS, cpus=2)
        with driver_env(c):
            ray.init(logging_level="ERROR", runtime_env=WORKER_ENV)
            try:
                yield c
            finally:
                ray.shutdown()
    assert not c.running_pids(), "the cluster's processes must all be gone"


@pytest.fixture(scope="module")
def model_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="px-model-") as d:
        (Path(d) / "config.json").write_text("{}")
        yield Path(d)


def node_names() -> dict[str, str]:
    return {n["NodeID"]: r.removeprefix("parallax_node_") for n in ray.nodes() if n["Alive"]
            for r in n["Resources"] if r.startswith("parallax_node_")}


def deploy(r: Resolved, cfg: ParallelConfig, model: Path) -> list[dict[str, Any]]:
    """Each replica of `cfg` as Serve places it (deployment_scheduler.py: its own placement group, the actor in
    bundle 0 capturing its children), with the resources and placement `server_options` gives the LLMServer
    (its runtime env aside: Serve's own settings, nothing to do with GPUs)."""
    opts = server_options(r, cfg)
    actor = opts["ray_actor_options"]
    kwargs = launch_for(r.scenario, cfg, "gpu").engine_kwargs
    groups: list[PlacementGroup] = []
    try:
        replicas = []
        for _ in range(cfg.replicas):
            pg = placement_group(opts["placement_group_bundles"], strategy=opts["placement_group_strategy"])
            groups.append(pg)
            replicas.append(ReplicaStandIn.options(
                num_cpus=actor["num_cpus"], num_gpus=actor["num_gpus"],
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=0,
                    placement_group_capture_child_tasks=True)).remote())
        return ray.get([rep.start.remote(kwargs, str(model)) for rep in replicas], timeout=180)
    finally:
        for pg in groups:
            remove_placement_group(pg)


def held_node_b() -> PlacementGroup:
    """All of node b's GPUs, so that a single-node split has to take every GPU of the head."""
    pg = placement_group([{"GPU": 1.0, "parallax_node_b": 0.01}] * NODE_GPUS, strategy="STRICT_PACK")
    ray.get(pg.ready(), timeout=60)
    return pg


def opened(replicas: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
    """(node, device) of every rank of every replica: how many open it."""
    return Counter((rank["node"], rank["device"]) for rep in replicas for rank in rep["ranks"])


def test_every_split_of_a_node_opens_each_gpu_once(cluster: LocalCluster, model_folder: Path) -> None:
    r = scenario(model_folder)
    names = node_names()
    hold = held_node_b()
    try:
        for cfg in ONE_NODE:
            replicas = deploy(r, cfg, model_folder)
            devices = {(names[n], g): k for (n, g), k in opened(replicas).items()}
            assert devices == {("head", g): 1 for g in range(NODE_GPUS)}, (cfg.name, devices)
            for rep in replicas:
                assert rep["replica"]["gpu_ids"] == [], cfg.name   # the replica actor holds no GPU
                assert rep["config_task"]["gpu_ids"][0] in {k["device"] for k in rep["ranks"]}, cfg.name
                assert {names[n] for n in rep["models"]} == {"head"}
                for rank in rep["ranks"]:
                    assert rank["gpu_ids"] == [rank["device"]], (cfg.name, rank)   # Ray's id is vLLM's device
                    assert rank["cuda_visible_devices"] is None, (cfg.name, rank)   # NOSET: Ray left it alone
                    assert rank["slot_node"] == rank["node"]
                stages = [{rk["node"] for rk in rep["ranks"][k * cfg.tp:(k + 1) * cfg.tp]} for k in range(cfg.pp)]
                assert all(len(s) == 1 for s in stages), (cfg.name, stages)   # each TP group inside a node
    finally:
        remove_placement_group(hold)


def test_tp8_pp2_spreads_its_stages_over_two_nodes(cluster: LocalCluster, model_folder: Path) -> None:
    names = node_names()
    (rep,) = deploy(scenario(model_folder), SPREAD, model_folder)
    devices = {(names[n], g): k for (n, g), k in opened([rep]).items()}
    assert devices == {(node, g): 1 for node in ("head", "b") for g in range(NODE_GPUS)}
    stages = [[names[rk["node"]] for rk in rep["ranks"][k * 8:(k + 1) * 8]] for k in range(2)]
    assert [len(set(s)) for s in stages] == [1, 1] and {stages[0][0], stages[1][0]} == {"head", "b"}
    assert stages[0][0] == names[rep["replica"]["node"]]   # stage 0 on the engine's own node
    assert {names[n] for n in rep["models"]} == {"head", "b"}   # the model checked on both nodes


@pytest.mark.vllm
@pytest.mark.parametrize("cfg", [*ONE_NODE, SPREAD], ids=lambda c: c.name)
def test_vllms_own_checks_accept_the_groups_and_order_ranks_as_we_do(cluster: LocalCluster, model_folder: Path,
                                                                    cfg: ParallelConfig,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's `initialize_ray_cluster` and `get_bundles_sorted_by_node` (vllm/v1/executor/ray_utils.py) on a
    placed group of each split, this CPU build told that Ray's GPUs are its devices (as the GPU build's
    CudaPlatform says): vLLM accepts it, and orders the ranks as `worker_slots` does."""
    from vllm.config import ParallelConfig as VllmParallelConfig
    from vllm.platforms import current_platform
    from vllm.v1.executor.ray_utils import get_bundles_sorted_by_node, initialize_ray_cluster

    monkeypatch.setattr(current_platform, "ray_device_key", "GPU")
    opts = server_options(scenario(model_folder), cfg)
    pg = placement_group(opts["placement_group_bundles"], strategy=opts["placement_group_strategy"])
    try:
        ray.get(pg.ready(), timeout=60)
        parallel = VllmParallelConfig(tensor_parallel_size=cfg.tp, pipeline_parallel_size=cfg.pp,
                                      distributed_executor_backend="ray", placement_group=pg)
        initialize_ray_cluster(parallel, require_gpu_on_driver=False)   # as RayExecutorV2 calls it
        theirs = [(b, n) for b, n, _ in get_bundles_sorted_by_node(pg)][:cfg.gpus_per_replica]
        table = ray.util.placement_group_table(pg)["bundles_to_node_id"]
        ours = worker_slots(pg.bundle_specs, table, ray.get_runtime_context().get_node_id(), cfg.gpus_per_replica)
        assert theirs == [(s.bundle, s.node) for s in ours]
    finally:
        remove_placement_group(pg)
    if cfg.spread_pp_over_nodes:   # the layout before issue 26: one bundle of tp GPUs per stage
        old = placement_group([{"GPU": float(cfg.tp)}] * cfg.pp, strategy="PACK")
        try:
            ray.get(old.ready(), timeout=60)
            with pytest.raises(ValueError, match="cannot have more than 1 GPU"):
                initialize_ray_cluster(VllmParallelConfig(tensor_parallel_size=cfg.tp, pipeline_parallel_size=cfg.pp,
                                                          distributed_executor_backend="ray", placement_group=old),
                                       require_gpu_on_driver=False)
        finally:
            remove_placement_group(old)
