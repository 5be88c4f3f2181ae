"""The planner's candidate deployments: the rules `parallax validate` applies, budgets, packing, class splits."""

from typing import Any

import pytest

from controllers.plan.candidates import (
    Budget,
    Knobs,
    Pool,
    Shape,
    candidates,
    class_partitions,
    fits,
    packs,
    shapes,
)
from controllers.plan.evaluate import PlanError
from controllers.plan.parallel import InProcess
from controllers.plan.search import PlanOptions, search
from deployments.catalog.memory import check_parallelism, plan_engine_memory
from deployments.resolve import Resolved, parse_scenario
from schema.deployment import EngineConfig
from schema.dtypes import Dtype

CHAT = {"name": "chat", "share": 0.5, "slo": {"ttft_ms": 450, "tpot_ms": 40},
        "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 20}}
LONG = {"name": "long", "share": 0.5, "slo": {"ttft_ms": 3000},
        "input": {"kind": "fixed", "value": 3000}, "output": {"kind": "fixed", "value": 20}}


def resolved(model: str = "llama-3.1-70b", dtype: str = "fp8", gpu: str = "h100-sxm", nodes: int = 1,
             **extra: Any) -> Resolved:
    return parse_scenario({"name": "t", "model": model, "dtype": dtype,
                           "hardware": {"gpu": gpu, "gpus_per_node": 8, "nodes": nodes},
                           "classes": [CHAT, LONG], **extra}, need_configurations=False)


def knobs_of(r: Resolved) -> Knobs:
    e = r.scenario.engine
    return Knobs(r.scenario.resolved_kv_dtype, e.max_num_seqs, e.max_num_batched_tokens)


def test_shapes_are_the_ones_validate_accepts() -> None:
    r = resolved()
    s = r.scenario
    k = knobs_of(r)
    found = shapes(r.model, r.gpu, s.dtype, s.engine, k, Budget(8, 8), spread_pp=False)
    assert found and all(sh.tp <= 8 and sh.gpus <= 8 for sh in found)
    for tp in range(1, 9):
        for pp in range(1, 8 // tp + 1):
            try:
                check_parallelism(r.model, tp, pp)
                ok = plan_engine_memory(s.engine, r.model, r.gpu, s.dtype, k.kv_dtype, tp, pp).fits
            except ValueError:
                ok = False
            assert (Shape(tp, pp) in found) == ok, (tp, pp)
    assert Shape(1, 1) not in found                   # 70B at 8 bits leaves an 80 GB H100 no KV cache
    assert Shape(3, 1) not in found                   # 3 does not divide 64 heads


def test_pipelines_cross_nodes_only_when_allowed_and_in_whole_nodes() -> None:
    r = resolved(model="llama-3.1-405b", dtype="bf16", nodes=2)
    s = r.scenario
    k = knobs_of(r)
    assert shapes(r.model, r.gpu, s.dtype, s.engine, k, Budget(16, 8), spread_pp=False) == []
    spread = shapes(r.model, r.gpu, s.dtype, s.engine, k, Budget(16, 8), spread_pp=True)
    assert spread and all(sh.gpus == 16 for sh in spread)     # 405B bf16 needs two whole nodes


def test_kv_dtype_changes_what_fits() -> None:
    r = resolved()
    s = r.scenario
    bf16 = Knobs(Dtype.bf16, 256, 8192)
    fp8 = Knobs(Dtype.fp8, 256, 8192)
    engine = EngineConfig()
    assert fits(r.model, r.gpu, s.dtype, engine, fp8, Shape(2, 1))
    a = plan_engine_memory(s.engine, r.model, r.gpu, s.dtype, Dtype.bf16, 2, 1).kv_tokens
    b = plan_engine_memory(s.engine, r.model, r.gpu, s.dtype, Dtype.fp8, 2, 1).kv_tokens
    assert b > 1.9 * a and fits(r.model, r.gpu, s.dtype, engine, bf16, Shape(2, 1))


@pytest.mark.parametrize(("n", "bell"), [(1, 1), (2, 2), (3, 5), (4, 15)])
def test_class_partitions_are_every_set_partition(n: int, bell: int) -> None:
    names = [f"c{i}" for i in range(n)]
    parts = list(class_partitions(names))
    assert len(parts) == bell
    assert len({frozenset(frozenset(g) for g in p) for p in parts}) == bell
    assert all(sorted(c for g in p for c in g) == names for p in parts)


def test_candidates_cover_the_budget_and_route_each_class_once() -> None:
    r = resolved()
    s = r.scenario
    k = knobs_of(r)
    shape_list = shapes(r.model, r.gpu, s.dtype, s.engine, k, Budget(4, 8), spread_pp=False)
    cands = candidates(shape_list, ["chat", "long"], k, Budget(4, 8), spread_pp=False)
    homo = [c for c in cands if c.homogeneous]
    assert len(homo) == sum(4 // sh.gpus for sh in shape_list)
    assert all(c.gpus <= 4 for c in cands)
    for c in cands:
        routed = [name for p in c.pools for name in p.classes]
        assert sorted(routed) == ["chat", "long"]
    split = [c for c in cands if not c.homogeneous]
    assert any(c.pools == (Pool(Shape(2, 1), 1, ("chat",)), Pool(Shape(2, 1), 1, ("long",))) for c in split)
    assert not any(c.gpus > 4 for c in split)
    only_homo = candidates(shape_list, ["chat", "long"], k, Budget(4, 8), spread_pp=False, heterogeneous=False)
    assert only_homo == homo


def test_packing_keeps_replicas_inside_nodes() -> None:
    two = Budget(16, 8)
    assert packs([Pool(Shape(4, 1), 3, ("a",)), Pool(Shape(2, 1), 2, ("b",))], two, spread_pp=False)
    assert not packs([Pool(Shape(4, 1), 3, ("a",)), Pool(Shape(2, 1), 3, ("b",))], two, spread_pp=False)
    assert not packs([Pool(Shape(4, 1), 1, ("a",)), Pool(Shape(8, 1), 2, ("b",))], two, spread_pp=False)
    assert Budget(12, 8).nodes == [8, 4]
    assert not packs([Pool(Shape(8, 1), 1, ("a",)), Pool(Shape(8, 1), 1, ("b",))], Budget(12, 8), spread_pp=False)


def test_a_budget_too_small_names_the_smallest_that_holds_the_model() -> None:
    r = resolved(model="llama-3.1-405b", dtype="bf16", nodes=4)
    with pytest.raises(PlanError) as e:
        search(r, PlanOptions(gpus=8), InProcess())   # fails before any simulation
    msg = str(e.value)
    assert "cannot hold one copy" in msg and "raise --gpus to 16" in msg and "hardware.nodes to 2" in msg
    s = r.scenario
    assert shapes(r.model, r.gpu, s.dtype, s.engine, knobs_of(r), Budget(8, 8), spread_pp=True) == []
    assert fits(r.model, r.gpu, s.dtype, s.engine, knobs_of(r), Shape(8, 2))


def test_a_budget_beyond_the_hardware_is_refused() -> None:
    with pytest.raises(PlanError, match=r"--gpus 9: the hardware has 8 GPUs"):
        search(resolved(), PlanOptions(gpus=9), InProcess())


def test_only_open_arrivals_can_be_planned() -> None:
    r = resolved(load={"arrival": {"kind": "closed", "concurrency": 4}})
    with pytest.raises(PlanError, match=r"load.arrival: .*not closed; change load.arrival.kind"):
        search(r, PlanOptions(), InProcess())
