"""Placement groups per replica, and the pre-deployment check that every replica has a node."""

import pytest

from deployments.placement import Node, PlacementError, gpu_nodes, inter_node_hops, plan_nodes, replica_placement
from schema.deployment import ParallelConfig


def cfg(name: str, tp: int = 1, pp: int = 1, replicas: int = 1, spread: bool = False) -> ParallelConfig:
    return ParallelConfig(name=name, tp=tp, pp=pp, replicas=replicas, spread_pp_over_nodes=spread)


def test_default_replica_is_one_node_one_bundle_per_gpu() -> None:
    p = replica_placement(cfg("tp4pp2", tp=4, pp=2), 1.0)
    assert p.strategy == "STRICT_PACK"
    assert len(p.bundles) == 8
    assert sum(b["GPU"] for b in p.bundles) == 8
    assert p.bundles[0]["CPU"] > 0 and all("CPU" not in b for b in p.bundles[1:])


def test_spread_replica_has_one_gpu_bundle_per_rank_packed() -> None:
    """vLLM's Ray executor refuses a bundle of more than one GPU (`initialize_ray_cluster`): a spread
    replica gets one bundle per rank like any other, PACK instead of STRICT_PACK (bug 2 of issue 26)."""
    p = replica_placement(cfg("tp8pp2", tp=8, pp=2, spread=True), 1.0)
    assert p.strategy == "PACK"
    assert [b["GPU"] for b in p.bundles] == [1.0] * 16
    assert p.bundles[0]["CPU"] == 1.0 and all("CPU" not in b for b in p.bundles[1:])
    assert p.as_deployment_options()["placement_group_strategy"] == "PACK"


def test_spread_flag_without_pp_changes_nothing() -> None:
    assert replica_placement(cfg("tp8", tp=8, spread=True), 1.0) == replica_placement(cfg("tp8", tp=8), 1.0)


def test_gpu_nodes_reads_alive_gpu_nodes() -> None:
    nodes = gpu_nodes([
        {"NodeID": "a", "Alive": True, "Resources": {"GPU": 4.0, "CPU": 2.0, "parallax_node_a": 1.0}},
        {"NodeID": "b", "Alive": False, "Resources": {"GPU": 4.0}},
        {"NodeID": "c", "Alive": True, "Resources": {"CPU": 8.0}},
    ])
    assert [(n.node_id, n.gpus) for n in nodes] == [("a", 4.0)]
    assert "parallax_node_a" in nodes[0].resources


def test_replicas_fill_nodes_and_stay_whole() -> None:
    plan = plan_nodes([cfg("tp4", tp=4, replicas=2)], [Node("a", 4), Node("b", 4)])
    assert sorted(n for (n,) in plan["tp4"]) == ["a", "b"]


def test_spread_pipeline_spans_nodes_only_when_it_must() -> None:
    plan = plan_nodes([cfg("tp2", tp=2), cfg("tp2pp3", tp=2, pp=3, spread=True)], [Node("a", 4), Node("b", 4)])
    stages = plan["tp2pp3"][0]
    assert len(stages) == 3 and set(stages) == {"a", "b"}


def test_pipeline_that_needs_two_nodes_is_refused_unless_spread() -> None:
    nodes = [Node("a", 4), Node("b", 4)]
    with pytest.raises(PlacementError, match=r"'tp2pp4'.*needs 8 GPUs on one node.*largest node has 4.*spread"):
        plan_nodes([cfg("tp2pp4", tp=2, pp=4)], nodes)
    assert [len(r) for r in plan_nodes([cfg("tp2pp4", tp=2, pp=4, spread=True)], nodes)["tp2pp4"]] == [4]


def test_fragmented_cluster_is_refused_with_the_counts() -> None:
    # 8 GPUs in all, but two replicas of 3 GPUs each per node leave no node with the 2 the third needs
    with pytest.raises(PlacementError, match=r"need 8 GPUs.*2 node\(s\) have 8 in all \(4, 4\).*'b'"):
        plan_nodes([cfg("a", tp=1, pp=3, replicas=2), cfg("b", tp=2)], [Node("a", 4), Node("b", 4)])


def test_tp_group_larger_than_any_node_is_refused() -> None:
    with pytest.raises(PlacementError, match=r"a TP group needs 8 GPUs.*largest node has 4; lower tp$"):
        plan_nodes([cfg("tp8pp2", tp=8, pp=2, spread=True)], [Node("a", 4), Node("b", 4), Node("c", 4)])


@pytest.mark.parametrize(("tp", "pp", "spread", "per_node", "hops"), [
    (4, 2, False, 8, 0), (4, 2, True, 8, 0), (4, 4, True, 8, 1), (2, 8, True, 4, 3), (1, 8, True, 3, 2),
])
def test_inter_node_hops(tp: int, pp: int, spread: bool, per_node: int, hops: int) -> None:
    assert inter_node_hops(cfg("c", tp=tp, pp=pp, spread=spread), per_node) == hops
