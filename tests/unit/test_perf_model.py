"""The performance model's physics: roofline sanity, monotonicity, KV-head replication, PP stages, speed."""

import time

import pytest

from deployments.catalog.gpus import GPUS
from deployments.catalog.memory import embedding_dtype
from deployments.catalog.models import LLAMA_3_1_8B, LLAMA_3_1_70B
from deployments.engines.sim.perf_model import TERMS, PerfModel
from deployments.engines.sim.work import BatchShape
from schema.dtypes import Dtype

H100 = GPUS["h100-sxm"]


def decode(b: int, ctx: int) -> BatchShape:
    return BatchShape(decode_seqs=b, decode_context=b * ctx)


def prefill(b: int, isl: int) -> BatchShape:
    return BatchShape(prefill_tokens=b * isl, prefill_seqs=b, prefill_attn_pairs=b * isl * (isl + 1) / 2)


def test_batch1_decode_is_weight_bytes_over_achievable_bandwidth_plus_overheads() -> None:
    perf = PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8, tp=2)
    c = perf.step(decode(1, 1000))
    m = LLAMA_3_1_70B
    layer_bytes = m.num_layers * m.params_per_layer * Dtype.fp8.bytes / 2
    head_bytes = m.vocab_size * m.hidden_size * embedding_dtype(Dtype.fp8).bytes / 2
    bw = H100.hbm_bytes_per_s * perf.constants.hbm_fraction
    # The four GEMMs per layer hold every weight except the two norms' (2h per layer, negligible).
    assert c.terms["gemm"] + c.terms["lm_head"] == pytest.approx((layer_bytes + head_bytes) / bw, rel=0.01)
    # What is not weight streaming is the fixed overheads: host, per-layer gaps, small all-reduces.
    rest = c.latency_s - c.terms["gemm"] - c.terms["lm_head"]
    host = perf.constants.host_decode_ms * 1e-3 + perf.constants.host_per_seq_us * 1e-6
    expected_rest = (host + m.num_layers * perf.constants.layer_overhead_us * 1e-6
                     + c.terms["allreduce"] + c.terms["attention"] + c.terms["elementwise"])
    assert rest == pytest.approx(expected_rest, rel=1e-6)
    # At TP8, small decode messages take the one-shot path, far below the 2·(8−1) steps of a ring.
    tp8 = PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8, tp=8).step(decode(1, 1000))
    ring_latency = 2 * m.num_layers * 2 * (8 - 1) * perf.constants.ring_step_us * 1e-6
    assert tp8.terms["allreduce"] < 0.5 * ring_latency


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (8, 1), (1, 4), (2, 2)])
def test_terms_add_up_to_latency(tp: int, pp: int) -> None:
    perf = PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.bf16, tp=tp, pp=pp)
    batch = BatchShape(prefill_tokens=512, prefill_seqs=2, prefill_attn_pairs=512 * 300.0, decode_seqs=40,
                       decode_context=40 * 2000)
    c = perf.step(batch)
    assert set(c.terms) == set(TERMS)
    assert sum(c.terms.values()) == pytest.approx(c.latency_s, rel=1e-9)
    assert all(v >= 0 for v in c.terms.values())
    assert (c.terms["allreduce"] > 0) == (tp > 1)
    assert (c.terms["p2p"] > 0) == (pp > 1)


def test_cost_grows_with_batch_and_context() -> None:
    perf = PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8, tp=4)
    by_batch = [perf.step(decode(b, 2000)).latency_s for b in (1, 2, 8, 32, 128, 512, 2048)]
    assert by_batch == sorted(by_batch) and by_batch[-1] > 2 * by_batch[0]
    by_ctx = [perf.step(decode(64, ctx)).latency_s for ctx in (100, 1000, 10_000, 100_000)]
    assert by_ctx == sorted(by_ctx) and by_ctx[-1] > 2 * by_ctx[0]
    by_prompt = [perf.step(prefill(1, isl)).latency_s for isl in (16, 256, 4096, 32_768)]
    assert by_prompt == sorted(by_prompt)
    # Causal attention is quadratic: at long prompts the per-token prefill cost rises.
    per_token = [perf.step(prefill(1, isl)).latency_s / isl for isl in (4096, 32_768, 131_072)]
    assert per_token == sorted(per_token)


def test_gemm_efficiency_rises_smoothly_to_a_plateau() -> None:
    c = PerfModel(LLAMA_3_1_8B, H100, Dtype.bf16, Dtype.bf16).constants
    effs = [c.gemm_efficiency(m) for m in (1, 8, 64, 512, 4096, 65_536)]
    assert effs == sorted(effs)
    assert effs[-1] == pytest.approx(c.gemm_flops_fraction, rel=0.01)
    assert effs[0] < 0.1 * c.gemm_flops_fraction


def test_prefill_is_compute_bound_and_decode_memory_bound() -> None:
    perf = PerfModel(LLAMA_3_1_8B, H100, Dtype.bf16, Dtype.bf16)
    big = perf.step(prefill(1, 8192)).terms["gemm"]
    flops = 2 * LLAMA_3_1_8B.num_layers * LLAMA_3_1_8B.params_per_layer * 8192
    assert big == pytest.approx(flops / (H100.peak_flops(Dtype.bf16) * perf.constants.gemm_efficiency(8192)),
                                rel=0.01)
    # Decoding 1 or 16 tokens costs about the same GEMM time: the weights are read once either way.
    assert perf.step(decode(16, 100)).terms["gemm"] == pytest.approx(perf.step(decode(1, 100)).terms["gemm"],
                                                                     rel=0.02)


def test_kv_heads_replicate_beyond_tp_equal_kv_heads() -> None:
    # Llama-3.1-70B has 8 KV heads: TP4 holds 2 per GPU, TP8 one, TP16 still one (replicated).
    attn = {tp: PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.bf16, tp=tp).step(decode(64, 8000)).terms["attention"]
            for tp in (4, 8, 16)}
    assert attn[4] == pytest.approx(2 * attn[8], rel=1e-6)
    assert attn[16] == pytest.approx(attn[8], rel=1e-6)


def test_pp_splits_the_pass_into_stages_without_shortening_it() -> None:
    one = PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8).step(decode(64, 2000))
    pp4 = PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8, pp=4).step(decode(64, 2000))
    assert pp4.latency_s > one.latency_s
    assert pp4.stage_s < 0.35 * pp4.latency_s
    assert one.stage_s == pytest.approx(one.latency_s)
    # 80 layers over 3 stages: 27 + 27 + 26; the slowest stage carries 27 layers (or 26 + the LM head).
    pp3 = PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8, pp=3)
    assert pp3.stage_layers == [27, 27, 26]
    c = pp3.step(decode(64, 2000))
    per_layer = (c.terms["gemm"] + c.terms["attention"] + c.terms["elementwise"] + c.terms["layer_overhead"]) / 80
    slowest = max(27 * per_layer, 26 * per_layer + c.terms["lm_head"])
    assert c.stage_s == pytest.approx(slowest + c.terms["host"] / 3, rel=1e-6)


def test_empty_batch_costs_nothing() -> None:
    c = PerfModel(LLAMA_3_1_8B, H100, Dtype.bf16, Dtype.bf16).step(BatchShape())
    assert c.latency_s == 0 and c.stage_s == 0


def test_step_is_cheap_and_independent_of_batch_size() -> None:
    perf = PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8, tp=8)
    shapes = [decode(b, 3000) for b in (1, 100, 10_000)] + [prefill(4, 2000)]
    t0 = time.process_time()   # CPU time: not inflated by other processes on a shared machine
    for _ in range(25_000):
        for s in shapes:
            perf.step(s)
    elapsed = time.process_time() - t0
    # 100,000 steps: an offline run of 10,000 requests needs a few hundred thousand in under 10 s.
    assert elapsed < 2.5, f"100k steps took {elapsed:.2f} s"


def test_bad_parallelism_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="tp=3"):
        PerfModel(LLAMA_3_1_70B, H100, Dtype.fp8, Dtype.fp8, tp=3)


def test_mid_size_all_reduce_on_a_mesh_takes_two_synchronised_phases_not_a_ring() -> None:
    """256 decoding sequences × 8192 × 2 bytes = 4 MiB per all-reduce on MI325X's mesh: a two-shot all-reduce
    (reduce-scatter + all-gather, each over all t−1 peer links at once) moves 2(t−1)/t of it per GPU in two
    synchronised phases, so the bytes per link and the time fall from TP4 to TP8; a ring would add 2(t−1)
    steps of latency in sequence and make TP8's all-reduce dearer than TP4's."""
    mi325x = GPUS["mi325x"]
    m = LLAMA_3_1_70B
    terms = {tp: PerfModel(m, mi325x, Dtype.fp8, Dtype.fp8, tp=tp).step(decode(256, 9000)).terms["allreduce"]
             for tp in (4, 8)}
    c = PerfModel(m, mi325x, Dtype.fp8, Dtype.fp8, tp=8).constants
    link = mi325x.link.group_bandwidth(8) * c.link_fraction
    two_shot = 2 * c.oneshot_us * 1e-6 + 2 * 7 / 8 * 256 * m.hidden_size * 2 / link
    assert terms[8] == pytest.approx(2 * m.num_layers * two_shot, rel=1e-9)
    assert terms[8] < 0.75 * terms[4]
