"""A slowed or failed GPU in the simulated engine: the physics of one slow rank in a TP group or a PP stage
(PerfModel.slowed), and the engine's fault seam (slow_rank, kill_rank, check_health)."""

import asyncio

import pytest

from deployments.catalog.gpus import GPUS, resolve_gpu
from deployments.catalog.models import LLAMA_3_1_70B, resolve_model
from deployments.engines.base import GenerationRequest
from deployments.engines.sim.engine import SimEngine
from deployments.engines.sim.perf_model import PerfModel
from deployments.engines.sim.work import BatchShape
from schema.deployment import DeploymentSpec, EngineConfig, Hardware, ParallelConfig
from schema.dtypes import Dtype

H100 = GPUS["h100-sxm"]
KERNELS = ("gemm", "attention", "elementwise", "layer_overhead")
SHAPES = [BatchShape(decode_seqs=64, decode_context=64 * 2000),
          BatchShape(prefill_tokens=4096, prefill_seqs=2, prefill_attn_pairs=2 * 2048 * 2049 / 2)]


def model(tp: int, pp: int) -> PerfModel:
    return PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8, tp=tp, pp=pp)


@pytest.mark.parametrize("shape", SHAPES, ids=["decode", "prefill"])
def test_full_speed_is_the_model_itself(shape: BatchShape) -> None:
    base = model(4, 2)
    same = base.slowed(3, 1.0)
    assert same.stage_speed == (1.0, 1.0)
    a, b = base.step(shape), same.step(shape)
    assert b.latency_s == pytest.approx(a.latency_s, rel=1e-12) and b.stage_s == pytest.approx(a.stage_s, rel=1e-12)
    assert b.terms == pytest.approx(a.terms, rel=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=["decode", "prefill"])
def test_one_slow_rank_of_a_tp_group_slows_every_kernel_of_the_step_not_the_links(shape: BatchShape) -> None:
    """TP8: each layer's all-reduce waits for the slowest rank, so the group computes at its speed; the
    all-reduce's transfer and the host keep their time."""
    base = model(8, 1).step(shape)
    slow = model(8, 1).slowed(5, 0.5).step(shape)
    for term in (*KERNELS, "lm_head"):
        assert slow.terms[term] == pytest.approx(2 * base.terms[term], rel=1e-12)
    for term in ("allreduce", "host", "p2p"):
        assert slow.terms[term] == pytest.approx(base.terms[term], rel=1e-12)
    added = sum(base.terms[t] for t in (*KERNELS, "lm_head"))
    assert slow.latency_s == pytest.approx(base.latency_s + added, rel=1e-12)
    assert sum(slow.terms.values()) == pytest.approx(slow.latency_s, rel=1e-12)


def test_a_slow_rank_makes_its_pipeline_stage_the_bottleneck() -> None:
    """TP4×PP2: rank 5 is in stage 1. Its stage's layers (and the LM head it runs) take twice as long; stage 0
    does not change; a new micro-batch can start only as often as the slow stage frees."""
    shape = SHAPES[0]
    perf = model(4, 2)
    base = perf.step(shape)
    layers = perf.stage_layers
    slow1 = perf.slowed(5, 0.5)
    assert slow1.stage_speed == (1.0, 0.5)
    s = slow1.step(shape)
    per_layer_kernels = sum(base.terms[t] for t in KERNELS) / sum(layers)
    ar = base.terms["allreduce"] / sum(layers)
    stage1 = layers[1] * (2 * per_layer_kernels + ar) + 2 * base.terms["lm_head"]
    assert s.stage_s == pytest.approx(stage1 + base.terms["host"] / 2, rel=1e-9)
    assert s.latency_s == pytest.approx(base.latency_s + layers[1] * per_layer_kernels + base.terms["lm_head"],
                                        rel=1e-9)
    # the same slow GPU in stage 0: the same stage time (equal layers) but without the LM head's share
    s0 = perf.slowed(1, 0.5).step(shape)
    assert perf.slowed(1, 0.5).stage_speed == (0.5, 1.0)
    assert s0.latency_s < s.latency_s and s0.stage_s < s.stage_s
    assert s.stage_s > base.stage_s * 1.5


def test_the_group_waits_for_its_slowest_rank_once() -> None:
    perf = model(8, 1)
    one = perf.slowed(2, 0.5).step(SHAPES[0])
    two = perf.slowed(2, 0.5).slowed(6, 0.8).step(SHAPES[0])
    assert two.latency_s == pytest.approx(one.latency_s, rel=1e-12)
    assert perf.slowed(2, 0.5).slowed(6, 0.25).stage_speed == (0.25,)


def test_bad_ranks_and_speeds_are_refused() -> None:
    with pytest.raises(ValueError, match="ranks 0 to 7"):
        model(4, 2).slowed(8, 0.5)
    with pytest.raises(ValueError, match="0 < factor"):
        model(4, 2).slowed(0, 0.0)


# --- the engine's fault seam ------------------------------------------------------------------------------

def engine(tp: int = 2, pp: int = 2) -> SimEngine:
    s = DeploymentSpec(model="llama-3.1-70b", dtype="fp8", hardware=Hardware(gpu="h100-sxm"),
                       engine=EngineConfig(time_scale=0.01), configurations=[ParallelConfig(name="c", tp=tp, pp=pp)])
    return SimEngine(s, s.configurations[0], resolve_model(s.model), resolve_gpu(s.hardware.gpu))


def test_slow_rank_swaps_the_model_and_restores_the_very_same_one() -> None:
    eng = engine()
    base = eng.core.cost_model
    assert eng.slow_rank(3, 0.5) == "rank 3 at 0.5× speed (stage speeds 1, 0.5)"
    slowed = eng.core.cost_model
    assert isinstance(slowed, PerfModel) and slowed.stage_speed == (1.0, 0.5)
    assert slowed.step(SHAPES[0]).latency_s > base.step(SHAPES[0]).latency_s
    assert eng.slow_rank(3, 1.0) == "rank 3 back to full speed"
    assert eng.core.cost_model is base
    with pytest.raises(ValueError, match="ranks 0 to 3"):
        eng.slow_rank(4, 0.5)


async def test_a_killed_rank_fails_requests_in_flight_refuses_new_ones_and_the_health_check() -> None:
    eng = engine()
    await eng.start()
    try:
        await eng.check_health()
        req = GenerationRequest("a", " ".join(["hi"] * 50), 100_000 // 100, "chat")
        stream = eng.generate(req)
        first = await anext(aiter(stream))
        assert first.num_tokens > 0
        assert eng.kill_rank(2) == "rank 2 failed: the engine stopped with 1 requests in flight"
        with pytest.raises(RuntimeError, match="the simulated engine stopped"):
            await asyncio.wait_for(anext(aiter(stream)), 5)
        with pytest.raises(RuntimeError, match="GPU rank 2 failed"):
            eng.generate(GenerationRequest("b", "hi", 4, "chat"))
        with pytest.raises(RuntimeError, match="GPU rank 2 failed"):
            await eng.check_health()
    finally:
        await eng.shutdown()
