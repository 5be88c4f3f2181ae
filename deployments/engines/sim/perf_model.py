"""Analytical time of one engine iteration of a dense decoder on a TP×PP deployment.

Per layer and GPU: the four GEMMs (QKV, O, gate/up, down) as TP shards them, each a roofline of
FLOPs at a shape-dependent achievable rate vs bytes at achievable HBM bandwidth; attention (prefill:
causal FLOPs; decode: KV-cache reads); element-wise kernels (norms, RoPE, SiLU, residuals, KV writes);
two all-reduces under TP (one-shot, two-shot or ring, whichever is fastest); a fixed per-layer kernel overhead.
Then the LM head on the last stage, PP−1 activation transfers and the host's per-iteration time.
`slowed` gives the same model with one GPU running slower (a throttled or degraded GPU): its TP group waits
for it at every all-reduce, and its pipeline stage becomes the slowest.
Equations and constants: deployments/engines/sim/MODEL.md.
"""

import copy

from deployments.catalog.gpus import GB, GpuSpec
from deployments.catalog.memory import check_parallelism, embedding_dtype, kv_heads_per_gpu, layers_per_stage
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.calibration import DEFAULT_CALIBRATION, Calibration
from deployments.engines.sim.work import BatchShape, StepCost
from schema.dtypes import Dtype

ACT_BYTES = 2.0  # activations travel and are stored in bf16

# The cost terms of the model's breakdown. An iteration prices all but `kv_transfer` (0 in every step): a
# disaggregated configuration's KV handoffs (kv_transfer.py), summed per replica by its event core.
TERMS = ("gemm", "attention", "elementwise", "layer_overhead", "allreduce", "lm_head", "p2p", "host", "kv_transfer")


class PerfModel:
    """CostModel of `model` in `dtype` (KV cache in `kv_dtype`) on TP×PP GPUs of kind `gpu`.

    Everything that does not depend on the batch is computed here once; `step` is plain float
    arithmetic, O(1) in the batch size.
    """

    def __init__(self, model: ModelSpec, gpu: GpuSpec, dtype: Dtype, kv_dtype: Dtype, tp: int = 1, pp: int = 1,
                 calibration: Calibration | None = None, inter_node_hops: int = 0) -> None:
        check_parallelism(model, tp, pp)
        if not 0 <= inter_node_hops <= pp - 1:
            raise ValueError(f"inter_node_hops={inter_node_hops}: a pipeline of {pp} stages has {pp - 1} transfers")
        self.model, self.gpu, self.dtype, self.kv_dtype, self.tp, self.pp = model, gpu, dtype, kv_dtype, tp, pp
        c = (calibration or DEFAULT_CALIBRATION).for_gpu(gpu)
        self.constants = c
        h, hd = model.hidden_size, model.head_dim
        q_heads = model.num_attention_heads // tp
        kv_heads = kv_heads_per_gpu(model, tp)
        ffn = model.intermediate_size / tp
        peak = gpu.peak_flops(dtype)
        bw = gpu.hbm_bytes_per_s * c.hbm_fraction
        wbytes = dtype.bytes

        # Per GEMM (K × N weight shard): seconds per token at full efficiency, weight-read seconds,
        # activation-traffic seconds per token.
        shapes = ((h, (q_heads + 2 * kv_heads) * hd), (q_heads * hd, h), (h, 2 * ffn), (ffn, h))
        self._gemms = tuple((2.0 * k * n / peak, k * n * wbytes / bw, (k + n) * ACT_BYTES / bw) for k, n in shapes)
        self._m_half = c.gemm_m_half
        self._gemm_frac = c.gemm_flops_fraction

        # Attention runs in the activations' 16-bit format (fp32 for fp32 models).
        attn_dtype = Dtype.fp32 if dtype == Dtype.fp32 else Dtype.bf16 if gpu.supports(Dtype.bf16) else Dtype.fp16
        attn_peak = gpu.peak_flops(attn_dtype) * c.attn_flops_fraction
        # Prefill: 2 GEMM-like products (QKᵀ, PV) of 2 FLOPs per multiply-add per query-key pair and head dim.
        self._attn_pair_s = 4.0 * q_heads * hd / attn_peak
        # Decode: per context token, read K and V of this GPU's KV heads; FLOPs bound checked too.
        kv_token_bytes = 2.0 * kv_heads * hd * kv_dtype.bytes
        self._attn_ctx_s = max(kv_token_bytes / (gpu.hbm_bytes_per_s * c.attn_hbm_fraction),
                               4.0 * q_heads * hd / attn_peak)
        # Element-wise traffic per token: two fused add+RMSNorm (read 2h, write 2h each), RoPE on q and k
        # (read + write), SiLU·mul (read 2F, write F), and the KV-cache write.
        elem_bytes = ACT_BYTES * (8 * h + 2 * (q_heads + kv_heads) * hd + 3 * ffn) + kv_token_bytes
        self._elem_s = elem_bytes / bw
        self._layer_overhead_s = c.layer_overhead_us * 1e-6

        # All-reduce of M·h activations, twice per layer; the engine uses the fastest algorithm for the size.
        # group_bandwidth is the bytes/s one GPU moves to (or from) the rest of the group at once (switch: its
        # link; mesh: t−1 links). One-shot: every GPU reads the t−1 other whole buffers (one synchronisation).
        # Two-shot (vLLM's custom all-reduce for mid-size messages, RCCL/NCCL direct algorithms): each GPU
        # reduces 1/t of the message read from every peer, then gathers the other reduced parts: 2(t−1)/t of
        # the message per GPU over all its peer links at once, in two synchronised phases. Ring: the same
        # bytes, but in 2(t−1) steps that follow one another.
        self._tp_group = tp > 1
        if tp > 1:
            group_bw = gpu.link.group_bandwidth(tp) * c.link_fraction
            self._oneshot_lat = c.oneshot_us * 1e-6
            self._oneshot_per_token = (tp - 1) * h * ACT_BYTES / group_bw
            self._twoshot_lat = 2 * c.oneshot_us * 1e-6
            self._ring_lat = 2 * (tp - 1) * c.ring_step_us * 1e-6
            self._ring_per_token = 2 * (tp - 1) / tp * h * ACT_BYTES / group_bw
            # Ring and two-shot move the same bytes: whichever has the lower fixed latency is the one.
            self._split_lat = min(self._twoshot_lat, self._ring_lat)

        # LM head on the last stage: vocab-parallel GEMM over the sampled rows, weights in bf16 for
        # quantised checkpoints.
        emb = embedding_dtype(dtype)
        v = model.vocab_size / tp
        self._lm_flop_s = 2.0 * h * v / gpu.peak_flops(emb)
        self._lm_weight_s = h * v * emb.bytes / bw
        self._lm_act_s = (h + v) * ACT_BYTES / bw

        # PP point-to-point: PP−1 transfers of the M·h hidden states to the next stage. `inter_node_hops` of
        # them cross from one node to the next (stages spread over nodes): each TP rank sends its copy over
        # its own network link at `inter_node_gbps`, the rest go over the node's fabric.
        self._p2p_lat = (pp - 1) * c.p2p_us * 1e-6
        intra_hops = pp - 1 - inter_node_hops
        self._p2p_per_token = h * ACT_BYTES / c.link_fraction * (
            intra_hops / gpu.link.group_bandwidth(2) + inter_node_hops / (gpu.inter_node_gbps * GB))

        self.stage_layers = layers_per_stage(model, pp)
        self._layers = model.num_layers
        self._max_layers = max(self.stage_layers)
        # The last stage also runs the LM head: it may be the slowest even with fewer layers.
        self._last_layers = self.stage_layers[-1]
        self._host_prefill = c.host_prefill_ms * 1e-3
        self._host_decode = c.host_decode_ms * 1e-3
        self._host_seq = c.host_per_seq_us * 1e-6
        self.stage_speed: tuple[float, ...] | None = None   # per pipeline stage: its slowest GPU's speed (1: full)

    def slowed(self, rank: int, factor: float) -> "PerfModel":
        """This model with GPU `rank` (stage × tp + TP rank, as vLLM numbers its workers) running at `factor` of
        its speed: every kernel on it takes 1/factor as long. Its TP peers wait for it at each layer's
        all-reduce, so its whole stage computes at that speed; links and the host keep theirs."""
        if not 0 <= rank < self.tp * self.pp:
            raise ValueError(f"rank {rank}: a tp{self.tp}×pp{self.pp} replica has ranks 0 to {self.tp * self.pp - 1}")
        if not 0 < factor <= 1:
            raise ValueError(f"factor {factor}: a GPU's speed is a fraction of its own, 0 < factor ≤ 1")
        out = copy.copy(self)
        speeds = list(self.stage_speed or (1.0,) * self.pp)
        stage = rank // self.tp
        speeds[stage] = min(speeds[stage], factor)
        out.stage_speed = tuple(speeds)
        return out

    def step(self, batch: BatchShape) -> StepCost:
        """Time of one iteration (one micro-batch through every stage)."""
        m = batch.prefill_tokens + batch.decode_seqs
        if m <= 0:
            return StepCost(0.0, 0.0, dict.fromkeys(TERMS, 0.0))
        eff = self._gemm_frac * m / (m + self._m_half)
        gemm = 0.0
        for flop_s, weight_s, act_s in self._gemms:
            compute = m * flop_s / eff
            memory = weight_s + m * act_s
            gemm += compute if compute > memory else memory
        attention = batch.prefill_attn_pairs * self._attn_pair_s + batch.decode_context * self._attn_ctx_s
        elementwise = m * self._elem_s
        allreduce = 0.0
        if self._tp_group:
            oneshot = self._oneshot_lat + m * self._oneshot_per_token
            split = self._split_lat + m * self._ring_per_token
            allreduce = 2.0 * (oneshot if oneshot < split else split)
        per_layer = gemm + attention + elementwise + self._layer_overhead_s + allreduce

        sampled = batch.prefill_seqs + batch.decode_seqs
        lm_compute = sampled * self._lm_flop_s / (self._gemm_frac * sampled / (sampled + self._m_half))
        lm_memory = self._lm_weight_s + sampled * self._lm_act_s
        lm_head = lm_compute if lm_compute > lm_memory else lm_memory
        p2p = self._p2p_lat + m * self._p2p_per_token if self.pp > 1 else 0.0
        host = (self._host_prefill if batch.prefill_tokens else self._host_decode) + sampled * self._host_seq

        n = self._layers
        latency = n * per_layer + lm_head + p2p + host
        slowest = max(self._max_layers * per_layer, self._last_layers * per_layer + lm_head)
        terms = {
            "gemm": n * gemm,
            "attention": n * attention,
            "elementwise": n * elementwise,
            "layer_overhead": n * self._layer_overhead_s,
            "allreduce": n * allreduce,
            "lm_head": lm_head,
            "p2p": p2p,
            "host": host,
            "kv_transfer": 0.0,
        }
        if self.stage_speed is not None:
            return self._slowed_step(terms, allreduce)
        return StepCost(latency, slowest + host / self.pp, terms)

    def _slowed_step(self, terms: dict[str, float], allreduce: float) -> StepCost:
        """`step` from its full-speed `terms`, with stage i's kernels (per layer, and the LM head on the last
        stage) taking 1/speed_i as long; the all-reduce, the pipeline transfers and the host keep their time."""
        speeds = self.stage_speed
        assert speeds is not None
        n = self._layers
        kernels = sum(terms[t] for t in ("gemm", "attention", "elementwise", "layer_overhead")) / n   # per layer
        stages = [layers * (kernels / v + allreduce) for layers, v in zip(self.stage_layers, speeds, strict=True)]
        stages[-1] += terms["lm_head"] / speeds[-1]
        stretch = sum(layers / v for layers, v in zip(self.stage_layers, speeds, strict=True)) / n
        out = dict(terms)
        for t in ("gemm", "attention", "elementwise", "layer_overhead"):
            out[t] = terms[t] * stretch
        out["lm_head"] = terms["lm_head"] / speeds[-1]
        rest = sum(v for t, v in terms.items() if t not in ("gemm", "attention", "elementwise", "layer_overhead",
                                                            "allreduce", "lm_head"))   # p2p, host: unchanged
        return StepCost(sum(stages) + rest, max(stages) + terms["host"] / self.pp, out)
