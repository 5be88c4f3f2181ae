"""Where vLLM's Ray executor puts a replica's workers: pure functions of its placement group, and
`replica_ranks`, which reads the placed group from Ray and refuses what vLLM would refuse or mis-place.

vLLM 0.32 starts its Ray executor from the engine-core process: RayExecutorV2 by default
(vllm/v1/executor/ray_executor_v2.py, `_init_executor`; the older RayDistributedExecutor with
VLLM_USE_RAY_V2_EXECUTOR_BACKEND=0). It
1. checks the placement group (`initialize_ray_cluster`, vllm/v1/executor/ray_utils.py): no bundle may
   hold more than one GPU, and there must be a GPU bundle per rank;
2. orders the GPU bundles node by node, the engine's own node first, then by node id, each node's in bundle
   order (`get_bundles_sorted_by_node`), and gives rank r the r-th: ranks k·tp … (k+1)·tp−1 form TP group k;
3. starts one worker actor per rank in its bundle with num_gpus=1 (VLLM_RAY_PER_WORKER_GPUS), num_cpus=0,
   and RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1 (so Ray leaves CUDA_VISIBLE_DEVICES alone);
4. gives each worker its node's GPU ids, sorted, and its local rank there: the worker opens
   cuda:<that list>[local rank].

vLLM only warns when a TP group spans nodes (`_verify_bundles`); across nodes its all-reduces would cross the
network on every layer. `tp_group_problems` makes that a refusal.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GPU = "GPU"


@dataclass(frozen=True)
class WorkerSlot:
    """Where one rank of vLLM's Ray executor runs."""

    rank: int
    bundle: int     # index in the replica's placement group
    node: str       # Ray node id


def check_bundles(bundles: Sequence[Mapping[str, float]], world_size: int) -> None:
    """vLLM's own check of a placement group (`initialize_ray_cluster`): ValueError when it refuses it."""
    gpu_bundles = 0
    for b in bundles:
        if b.get(GPU, 0) > 1:
            raise ValueError(f"Placement group bundle cannot have more than 1 {GPU}.")
        gpu_bundles += b.get(GPU, 0) > 0
    if world_size > gpu_bundles:
        raise ValueError(f"The number of required {GPU}s exceeds the total number of available {GPU}s in the "
                         f"placement group. Required number of devices: {world_size}. Total number of devices: "
                         f"{gpu_bundles}.")


def worker_slots(bundles: Sequence[Mapping[str, float]], bundle_nodes: Mapping[int, str], driver_node: str,
                 world_size: int) -> list[WorkerSlot]:
    """Rank → bundle → node as RayExecutorV2 assigns them (`get_bundles_sorted_by_node`, then the first
    `world_size`): GPU bundles on the engine's node (`driver_node`) first, then node by node."""
    gpu = [(i, bundle_nodes[i]) for i, b in enumerate(bundles) if b.get(GPU, 0)]
    gpu.sort(key=lambda item: (0 if item[1] == driver_node else 1, item[1]))  # stable: bundle order within a node
    return [WorkerSlot(rank=r, bundle=i, node=n) for r, (i, n) in enumerate(gpu[:world_size])]


def tp_group_problems(slots: Sequence[WorkerSlot], tp: int) -> list[str]:
    """The TP groups whose ranks sit on more than one node, in words (empty: every TP group in one node)."""
    problems = []
    for k in range(0, len(slots), tp):
        group = slots[k:k + tp]
        nodes = sorted({s.node for s in group})
        if len(nodes) > 1:
            problems.append(f"TP group {k // tp} (ranks {group[0].rank}-{group[-1].rank}) spans nodes "
                            f"{', '.join(n[:8] for n in nodes)}")
    return problems


def replica_ranks(pg: Any, node: str, tp: int, world_size: int) -> list[WorkerSlot]:
    """Where the ranks of the engine of the replica on `node` in placement group `pg` will run; ValueError
    when vLLM would refuse the group, or a TP group would span nodes (Ray's PACK may split one when a node
    is partly taken)."""
    import ray

    check_bundles(pg.bundle_specs, world_size)
    slots = worker_slots(pg.bundle_specs, ray.util.placement_group_table(pg)["bundles_to_node_id"], node, world_size)
    split = tp_group_problems(slots, tp)
    if split:
        raise ValueError(f"Ray placed this replica's GPU bundles so that {'; '.join(split)}; free whole nodes for "
                         "it (or lower tp) and redeploy")
    return slots
