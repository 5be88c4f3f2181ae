"""Static-batch mode, and the study's qualitative findings (arXiv 2603.05692) on its own setups:
Llama-3.1-70B FP8 on MI325X and Llama-3.1-405B FP4 on MI355X, one 8-GPU node."""

from functools import cache

import pytest

from deployments.catalog.gpus import GPUS, LinkSpec
from deployments.catalog.memory import plan_memory
from deployments.catalog.models import LLAMA_3_1_70B, LLAMA_3_1_405B
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.perf_model import PerfModel
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.simulate import simulate_static
from deployments.engines.sim.static_batch import StaticBatchResult, kv_sequences, max_static_batch, static_batch
from deployments.engines.sim.work import BatchShape
from schema.deployment import EngineConfig
from schema.dtypes import Dtype

# (name, model, gpu, weight dtype, KV dtype, long workload ISL/OSL, short workload ISL/OSL)
SETUPS = {
    "70b-mi325x": (LLAMA_3_1_70B, GPUS["mi325x"], Dtype.fp8, Dtype.fp8, (9092, 208), (106, 26)),
    "405b-mi355x": (LLAMA_3_1_405B, GPUS["mi355x"], Dtype.fp4, Dtype.bf16, (9428, 684), (89, 20)),
}
CONFIGS = [(1, 1), (2, 1), (4, 1), (8, 1), (1, 2), (1, 4), (1, 8), (2, 2), (4, 2), (2, 4)]
BATCHES = [1, 4, 16, 64, 256]
NODE_GPUS = 8


@cache
def perf(setup: str, tp: int, pp: int, gpu_name: str | None = None) -> PerfModel:
    model, gpu, dtype, kv, _, _ = SETUPS[setup]
    if gpu_name == "fast-links":
        gpu = gpu.model_copy(update={"link": LinkSpec(topology="mesh", bandwidth_gbps=4 * gpu.link.bandwidth_gbps)})
    return PerfModel(model, gpu, dtype, kv, tp=tp, pp=pp)


def run(setup: str, tp: int, pp: int, batch: int, long: bool = True, gpu_name: str | None = None) -> StaticBatchResult:
    isl, osl = SETUPS[setup][4 if long else 5]
    return static_batch(perf(setup, tp, pp, gpu_name), batch, isl, osl, replicas=NODE_GPUS // (tp * pp))


def saturated(setup: str, tp: int, pp: int, long: bool) -> StaticBatchResult:
    isl, osl = SETUPS[setup][4 if long else 5]
    b = min(1024, max_static_batch(perf(setup, tp, pp), isl, osl))
    assert b >= 1
    return run(setup, tp, pp, b, long)


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("long", [True, False])
def test_highest_tp_has_lowest_ttft_and_tpot_at_every_batch(setup: str, long: bool) -> None:
    for b in BATCHES:
        results = {(tp, pp): run(setup, tp, pp, b, long) for tp, pp in CONFIGS}
        tp8 = results[(8, 1)]
        for cfg, r in results.items():
            if cfg != (8, 1):
                assert tp8.prefill_ms < r.prefill_ms, (b, cfg)
                assert tp8.decode_step_ms < r.decode_step_ms, (b, cfg)
        # Once prefill is compute-bound (long prompts, or batches of short ones), TTFT falls almost
        # linearly with TP beyond TP2 (the all-reduce share stays put), TPOT less.
        if b >= 16 or long:
            ttft_gain = results[(2, 1)].prefill_ms / tp8.prefill_ms
            tpot_gain = results[(2, 1)].decode_step_ms / tp8.decode_step_ms
            assert ttft_gain > 3.0, (b, ttft_gain)
            assert ttft_gain > tpot_gain, (b, ttft_gain, tpot_gain)


@pytest.mark.parametrize("setup", SETUPS)
def test_pp_alone_does_not_lower_ttft_or_tpot(setup: str) -> None:
    for long in (True, False):
        for b in BATCHES:
            base = run(setup, 1, 1, b, long)
            for pp in (2, 4, 8):
                r = run(setup, 1, pp, b, long)
                assert r.prefill_ms >= base.prefill_ms and r.decode_step_ms >= base.decode_step_ms, (long, b, pp)


@pytest.mark.parametrize("setup", SETUPS)
def test_deeper_pp_fits_larger_batches_and_beats_tp_on_saturated_throughput(setup: str) -> None:
    for long in (True, False):
        isl, osl = SETUPS[setup][4 if long else 5]
        depth = [max_static_batch(perf(setup, 1, pp), isl, osl) for pp in (1, 2, 4, 8)]
        if depth[0] < 1024:
            assert depth == sorted(depth) and depth[-1] > depth[0], depth
        for k in (2, 4, 8):
            pp_tps = saturated(setup, 1, k, long).output_tokens_per_s
            tp_tps = saturated(setup, k, 1, long).output_tokens_per_s
            assert pp_tps > tp_tps, (long, k, pp_tps, tp_tps)


def pp8_over_tp8(setup: str, long: bool) -> float:
    return saturated(setup, 1, 8, long).output_tokens_per_s / saturated(setup, 8, 1, long).output_tokens_per_s


@pytest.mark.parametrize("setup", SETUPS)
def test_long_prompts_gain_less_from_pp(setup: str) -> None:
    long, short = pp8_over_tp8(setup, long=True), pp8_over_tp8(setup, long=False)
    assert 1 < long < short


@pytest.mark.parametrize("setup", SETUPS)
def test_allreduce_share_of_ttft_is_roughly_constant_across_tp(setup: str) -> None:
    shares = [run(setup, tp, 1, 16).breakdown["prefill"]["allreduce"] for tp in (2, 4, 8)]
    assert min(shares) > 0.1
    assert max(shares) / min(shares) < 1.25, shares


@pytest.mark.parametrize("setup", SETUPS)
def test_faster_links_lower_ttft_at_tp8(setup: str) -> None:
    slow = run(setup, 8, 1, 16)
    fast = run(setup, 8, 1, 16, gpu_name="fast-links")
    assert fast.prefill_ms < 0.9 * slow.prefill_ms
    assert fast.breakdown["prefill"]["allreduce"] < slow.breakdown["prefill"]["allreduce"]


@pytest.mark.parametrize("setup", SETUPS)
def test_pp_point_to_point_is_a_tiny_share_of_ttft(setup: str) -> None:
    # A few per cent at most: 3.2 % at PP8 for 405B on MI355X, whose transfers share the link fraction
    # fitted on RCCL's 8-way all-reduces (an upper estimate for a point-to-point send; MODEL.md).
    for pp in (2, 4, 8):
        share = run(setup, 1, pp, 16).breakdown["prefill"]["p2p"]
        assert 0 < share < 0.035


def test_tp2_prefill_vs_tp1_depends_on_link_vs_compute() -> None:
    """On MI355X (twice MI325X's FLOP/s, similar links) TP2's all-reduces cost more than the halved
    compute saves: TP2 prefill is slower than TP1, as the study saw. On MI325X they cost about what it
    saves (TP2 is no faster than TP1, as the study saw); on NVSwitch (H100) TP2 is clearly faster."""
    assert run("405b-mi355x", 2, 1, 1).prefill_ms > run("405b-mi355x", 1, 1, 1).prefill_ms
    assert run("70b-mi325x", 2, 1, 1).prefill_ms > 0.9 * run("70b-mi325x", 1, 1, 1).prefill_ms
    h100 = {tp: PerfModel(LLAMA_3_1_70B, GPUS["h100-sxm"], Dtype.fp8, Dtype.fp8, tp=tp) for tp in (1, 2)}
    ttft = {tp: static_batch(p, 1, 9092, 208).prefill_ms for tp, p in h100.items()}
    assert ttft[2] < 0.7 * ttft[1]


def test_throughput_formula_and_mean_decode_step() -> None:
    p = perf("70b-mi325x", 2, 2)
    isl, osl, b = 1000, 50, 8
    r = static_batch(p, b, isl, osl, replicas=2)
    steps = []
    for k in range(osl):
        c = p.step(BatchShape(decode_seqs=b, decode_context=b * (isl + k)))
        steps.append(max(c.latency_s, 2 * c.stage_s))
    assert r.decode_step_ms == pytest.approx(1e3 * sum(steps) / osl, rel=1e-9)
    pre = p.step(BatchShape(prefill_tokens=b * isl, prefill_seqs=b, prefill_attn_pairs=b * isl * (isl + 1) / 2))
    assert r.prefill_ms == pytest.approx(pre.latency_s * 1e3)
    total = max(pre.latency_s, 2 * pre.stage_s) + osl * r.decode_step_ms / 1e3
    assert r.output_tokens_per_s == pytest.approx(2 * b * osl * 2 / total)
    assert sum(r.breakdown["decode"].values()) == pytest.approx(1.0)


def test_max_batch_is_what_the_kv_cache_holds() -> None:
    p = perf("405b-mi355x", 2, 2)
    isl, osl = 9428, 684
    mb = max_static_batch(p, isl, osl)
    plan = plan_memory(p.model, p.gpu, p.dtype, p.kv_dtype, 2, 2)
    seq_tokens = -(-(isl + osl) // 16) * 16
    assert 2 * mb * seq_tokens <= plan.kv_tokens < 2 * (mb + 1) * seq_tokens
    assert run("405b-mi355x", 2, 2, mb).fits and not run("405b-mi355x", 2, 2, mb + 1).fits


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        static_batch(perf("70b-mi325x", 1, 1), 0, 100, 10)


def test_simulator_reproduces_static_batch_when_run_as_one_batch() -> None:
    """B requests queued at once, all prefilled in one iteration: the event-driven simulator over the same
    performance model gives the static mode's TTFT and mean decode step."""
    model, gpu, dtype, kv, _, _ = SETUPS["70b-mi325x"]
    b, isl, osl = 4, 1000, 50
    factory = ReplicaFactory(model, gpu, dtype, kv, 2, 1, EngineConfig(max_num_batched_tokens=b * isl))
    res = run_offline(factory, [RequestSpec(isl, osl) for _ in range(b)])
    static = static_batch(factory.cost_model, b, isl, osl)
    for r in res.records:
        assert r.ttft * 1e3 == pytest.approx(static.prefill_ms, rel=1e-6)
        # The simulator's context counts the token being decoded too: at most one token per step apart.
        assert r.tpot * 1e3 == pytest.approx(static.decode_step_ms, rel=1e-3)


def test_a_batch_twice_the_kv_cache_runs_in_two_waves_of_about_one_batch_each() -> None:
    """As `vllm bench latency` runs it: all requests submitted at once, the scheduler admitting what the KV
    cache holds and the rest as sequences finish."""
    factory = ReplicaFactory(LLAMA_3_1_70B, GPUS["h100-sxm"], Dtype.fp8, Dtype.bf16, 8, 1,
                             EngineConfig(gpu_memory_utilization=0.3, max_num_seqs=2048))
    isl, osl = 1024, 64
    cap = kv_sequences(factory.plan, isl, osl)
    one, two = simulate_static(factory, cap, isl, osl), simulate_static(factory, 2 * cap, isl, osl)
    assert (one["waves"], two["waves"]) == (1, 2)
    assert 1.85 < two["e2e_ms"] / one["e2e_ms"] < 2.2
    assert two["ttft_ms"]["p90"] > one["prefill_ms"]   # the second wave waits for the first


def test_the_studys_batches_fit_only_with_the_study_memory_model() -> None:
    """70B FP8 TP2 at batch 256 of LongAlpaca on MI325X and 405B FP4 on one MI355X at batch 32 of MLPerf
    summarisation, FP8 KV cache: the study counts all HBM (and every parameter at the weight dtype)."""
    cases = [(LLAMA_3_1_70B, GPUS["mi325x"], Dtype.fp8, 2, 256, 9092, 208),
             (LLAMA_3_1_405B, GPUS["mi355x"], Dtype.fp4, 1, 32, 9428, 684)]
    for model, gpu, dtype, tp, batch, isl, osl in cases:
        vllm = ReplicaFactory(model, gpu, dtype, Dtype.fp8, tp, 1)
        study = ReplicaFactory(model, gpu, dtype, Dtype.fp8, tp, 1, EngineConfig(memory_model="study"))
        assert kv_sequences(vllm.plan, isl, osl) < batch <= kv_sequences(study.plan, isl, osl)
        out = simulate_static(study, batch, isl, osl)
        assert out["waves"] == 1 and out["prefill_ms"] > 0
        with pytest.raises(ValueError, match="the study runs only batches that fit"):
            simulate_static(study, 2 * batch, isl, osl)
