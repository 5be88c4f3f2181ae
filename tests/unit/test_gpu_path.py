"""The real-GPU path without a GPU: for every split of the study, the engine arguments, executor, bundles and
strategy are what vLLM's Ray executor accepts (vLLM's own argument and config classes where they need no GPU),
and its ranks land where they should (engines/vllm/GPU.md)."""

import pytest

pytestmark = pytest.mark.vllm

from vllm.config import ParallelConfig as VllmParallelConfig  # noqa: E402
from vllm.config import VllmConfig  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.v1.executor.abstract import Executor  # noqa: E402

from deployments.app import REPLICA_CPUS  # noqa: E402
from deployments.engines.vllm.args import launch_for  # noqa: E402
from deployments.engines.vllm.ray_workers import (  # noqa: E402
    WorkerSlot,
    check_bundles,
    tp_group_problems,
    worker_slots,
)
from deployments.placement import replica_placement  # noqa: E402
from deployments.resolve import parse_scenario  # noqa: E402
from schema.deployment import ParallelConfig  # noqa: E402
from tests.support.gpu_splits import ONE_NODE, SPREAD  # noqa: E402

SPLITS = [*ONE_NODE, ParallelConfig(name="tp2pp4", tp=2, pp=4), SPREAD]
RESOLVED = parse_scenario({
    "name": "gpu-path", "model": "llama-3.1-70b", "dtype": "fp8", "hardware": {"gpu": "h200", "nodes": 2},
    "engine": {"kind": "vllm", "model_path": "meta-llama/Llama-3.1-70B-Instruct"},
    "configurations": [{"name": "tp8", "tp": 8}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500},
                 "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 20}}],
})


def placed(cfg: ParallelConfig) -> dict[int, str]:
    """Bundle → node as Ray places one replica on empty 8-GPU nodes "a" (the replica's, bundle 0) and "b":
    STRICT_PACK keeps it in one node; PACK fills "a" and overflows into "b"."""
    return {i: "a" if i < 8 else "b" for i in range(cfg.gpus_per_replica)}


@pytest.mark.parametrize("cfg", SPLITS, ids=lambda c: c.name)
def test_engine_arguments_are_vllms_and_pick_its_ray_executor(cfg: ParallelConfig) -> None:
    kw = launch_for(RESOLVED.scenario, cfg, "gpu").engine_kwargs
    args = AsyncEngineArgs(**kw)   # vLLM's own argument class: every key is one of its fields
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (cfg.tp, cfg.pp)
    parallel = VllmParallelConfig(tensor_parallel_size=cfg.tp, pipeline_parallel_size=cfg.pp,
                                  distributed_executor_backend=args.distributed_executor_backend)
    executor = Executor.get_class(VllmConfig(parallel_config=parallel))
    assert parallel.use_ray and executor.uses_ray, executor   # every rank a Ray actor holding one GPU bundle


@pytest.mark.parametrize("cfg", SPLITS, ids=lambda c: c.name)
def test_bundles_and_strategy_are_what_vllms_ray_executor_accepts(cfg: ParallelConfig) -> None:
    p = replica_placement(cfg, REPLICA_CPUS)
    check_bundles(p.bundles, cfg.gpus_per_replica)   # no bundle of more than one GPU, one per rank
    assert len(p.bundles) == cfg.gpus_per_replica and p.bundles[0]["CPU"] == REPLICA_CPUS
    assert p.strategy == ("PACK" if cfg.spread_pp_over_nodes else "STRICT_PACK")


@pytest.mark.parametrize("cfg", SPLITS, ids=lambda c: c.name)
def test_every_tp_group_stays_in_a_node_and_spread_stages_span_two(cfg: ParallelConfig) -> None:
    p = replica_placement(cfg, REPLICA_CPUS)
    slots = worker_slots(p.bundles, placed(cfg), "a", cfg.gpus_per_replica)
    assert [s.rank for s in slots] == list(range(cfg.gpus_per_replica))
    assert sorted(s.bundle for s in slots) == list(range(cfg.gpus_per_replica))   # each GPU bundle once
    assert tp_group_problems(slots, cfg.tp) == []
    stages = [{s.node for s in slots[k * cfg.tp:(k + 1) * cfg.tp]} for k in range(cfg.pp)]
    assert [len(s) for s in stages] == [1] * cfg.pp
    assert len(set().union(*stages)) == (2 if cfg.spread_pp_over_nodes else 1)


def test_a_bundle_of_several_gpus_is_refused_as_vllm_refuses_it() -> None:
    """Bug 2 of issue 26: the old spread layout, one bundle of `tp` GPUs per stage."""
    with pytest.raises(ValueError, match="cannot have more than 1 GPU"):
        check_bundles([{"CPU": 1.0, "GPU": 8.0}, {"GPU": 8.0}], 16)
    with pytest.raises(ValueError, match=r"Required number of devices: 8\. Total number of devices: 4"):
        check_bundles([{"GPU": 1.0}] * 4, 8)


def test_ranks_start_on_the_engines_node_then_go_node_by_node() -> None:
    """As vLLM's get_bundles_sorted_by_node: the driver's node first, then by node id, bundle order within."""
    bundles = [{"GPU": 1.0}] * 6
    nodes = {0: "z", 1: "b", 2: "z", 3: "b", 4: "c", 5: "c"}
    slots = worker_slots(bundles, nodes, "z", 6)
    assert [(s.bundle, s.node) for s in slots] == [(0, "z"), (2, "z"), (1, "b"), (3, "b"), (4, "c"), (5, "c")]
    assert [s.bundle for s in worker_slots([{"CPU": 1.0}, *bundles[:3]], {0: "z", 1: "z", 2: "z", 3: "z"}, "z", 2)] \
        == [1, 2]   # a bundle without a GPU gets no rank


def test_a_tp_group_split_over_nodes_is_named() -> None:
    """PACK may fill a node partly taken by others: 5 + 11 bundles split TP group 0 of TP8×PP2."""
    slots = [WorkerSlot(rank=r, bundle=r, node="a" if r < 5 else "b") for r in range(16)]
    (problem,) = tp_group_problems(slots, 8)
    assert problem.startswith("TP group 0 (ranks 0-7) spans nodes a, b")
