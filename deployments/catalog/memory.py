"""Memory arithmetic of a TP×PP deployment: weight shards, KV bytes per token, KV-cache capacity.

Pure functions. The rules follow vLLM: attention heads split evenly over TP ranks; KV heads split
when TP divides them and are replicated (one per rank) when TP is a multiple of them; layers split
over PP stages as evenly as possible (earlier stages take the remainder, like vLLM's partition).

Two ways to count what is left for the KV cache (`MemoryModel`):
- "vllm": as vLLM does — `gpu_memory_utilization` of the HBM, less the weights, the runtime reserve and
  the activations of one `max_num_batched_tokens` pass; quantised checkpoints keep embeddings in bf16.
- "study": the study's arithmetic (arXiv 2603.05692) — all HBM holds weights and KV cache, every parameter
  at the weight dtype, nothing reserved. Its batch sizes (e.g. 405B FP4 at batch 32 of 9428+684 tokens on
  one MI355X) fit only this way.
"""

import math
from dataclasses import dataclass

from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec
from schema.deployment import EngineConfig, MemoryModel
from schema.dtypes import Dtype

GIB = 1024**3
# Memory outside the KV cache and the weights that a serving engine holds on every GPU:
# CUDA/HIP context, communicator buffers and CUDA graphs (about 1-2 GiB on vLLM on H100).
RUNTIME_RESERVE_BYTES = 1.5 * GIB


def describe_memory_model(memory_model: MemoryModel, gpu_memory_utilization: float) -> str:
    """One line saying how the KV cache was sized (what `parallax validate` and `simulate` print)."""
    if memory_model == "study":
        return "memory model 'study': all HBM holds the weights (every parameter at the weight dtype) and KV cache"
    return (f"memory model 'vllm': {gpu_memory_utilization:g} of HBM, less the weights, the runtime and the "
            "activation reserve, holds the KV cache")


def check_parallelism(model: ModelSpec, tp: int, pp: int) -> None:
    """Raise ValueError when a (TP, PP) split is impossible for this model, as vLLM would refuse it."""
    if tp < 1 or pp < 1:
        raise ValueError("tp and pp must be at least 1")
    if model.num_attention_heads % tp:
        divisors = [d for d in range(1, model.num_attention_heads + 1) if model.num_attention_heads % d == 0]
        raise ValueError(
            f"tp={tp} does not divide {model.name}'s {model.num_attention_heads} attention heads; "
            f"use one of {', '.join(map(str, divisors[:8]))}"
        )
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise ValueError(
            f"tp={tp} neither divides nor is a multiple of {model.name}'s {model.num_kv_heads} KV heads"
        )
    if pp > model.num_layers:
        raise ValueError(f"pp={pp} is deeper than {model.name}'s {model.num_layers} layers; use pp ≤ "
                         f"{model.num_layers}")


def layers_per_stage(model: ModelSpec, pp: int) -> list[int]:
    """Layers of each pipeline stage, as evenly as possible."""
    base, extra = divmod(model.num_layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads one GPU holds: split under TP, replicated once TP exceeds the KV-head count."""
    return max(1, model.num_kv_heads // tp)


def embedding_dtype(dtype: Dtype) -> Dtype:
    """Quantised checkpoints (FP8 / FP4) keep embeddings and the LM head in bf16."""
    return Dtype.bf16 if dtype.bytes < 2 else dtype


def weight_bytes_per_gpu(model: ModelSpec, dtype: Dtype, tp: int, pp: int, memory_model: MemoryModel = "vllm") -> float:
    """Weight bytes on the most loaded GPU: its stage's layers / TP, plus embeddings on the end stages
    (in bf16 for quantised checkpoints; at the weight dtype under the study's memory model)."""
    stages = layers_per_stage(model, pp)
    emb = dtype if memory_model == "study" else embedding_dtype(dtype)
    emb_bytes = model.vocab_size * model.hidden_size * emb.bytes / tp
    per_stage = []
    for i, n in enumerate(stages):
        b = n * model.params_per_layer * dtype.bytes / tp
        if i == 0:
            b += emb_bytes
        if i == pp - 1 and not model.tie_word_embeddings:
            b += emb_bytes
        per_stage.append(b)
    return max(per_stage)


def kv_bytes_per_token(model: ModelSpec, kv_dtype: Dtype, tp: int, pp: int) -> float:
    """KV-cache bytes one token costs on the most loaded GPU (K and V, its stage's layers)."""
    return 2 * kv_heads_per_gpu(model, tp) * model.head_dim * kv_dtype.bytes * max(layers_per_stage(model, pp))


def activation_bytes(model: ModelSpec, tp: int, max_num_batched_tokens: int) -> float:
    """Peak activation memory of one forward pass over `max_num_batched_tokens` tokens (bf16).

    The widest live tensors are the gate/up output (2·FFN/TP), the QKV output and the residual
    stream; vLLM measures this with a profiling run and keeps it out of the KV cache.
    """
    width = 2 * model.intermediate_size / tp + (model.q_size + 2 * model.kv_size) / tp + 2 * model.hidden_size
    return max_num_batched_tokens * width * 2.0


@dataclass(frozen=True)
class MemoryPlan:
    """How one GPU's memory is spent, and the KV cache it leaves for one replica."""

    gpu_bytes: float
    usable_bytes: float
    weight_bytes: float
    reserve_bytes: float
    kv_bytes: float
    kv_bytes_per_token: float
    kv_tokens: int
    num_blocks: int
    block_size: int
    memory_model: MemoryModel = "vllm"

    @property
    def fits(self) -> bool:
        return self.num_blocks > 0


def plan_memory(
    model: ModelSpec,
    gpu: GpuSpec,
    dtype: Dtype,
    kv_dtype: Dtype,
    tp: int,
    pp: int,
    gpu_memory_utilization: float = 0.9,
    max_num_batched_tokens: int = 8192,
    block_size: int = 16,
    memory_model: MemoryModel = "vllm",
) -> MemoryPlan:
    """KV capacity of one replica: (memory × utilisation − weights − reserve) / KV bytes per token
    ("vllm"), or (memory − weights) / KV bytes per token ("study")."""
    study = memory_model == "study"
    usable = gpu.memory_bytes * (1.0 if study else gpu_memory_utilization)
    weights = weight_bytes_per_gpu(model, dtype, tp, pp, memory_model)
    reserve = 0.0 if study else RUNTIME_RESERVE_BYTES + activation_bytes(model, tp, max_num_batched_tokens)
    kv = max(0.0, usable - weights - reserve)
    per_token = kv_bytes_per_token(model, kv_dtype, tp, pp)
    blocks = math.floor(kv / (per_token * block_size))
    return MemoryPlan(
        gpu_bytes=gpu.memory_bytes, usable_bytes=usable, weight_bytes=weights, reserve_bytes=reserve,
        kv_bytes=kv, kv_bytes_per_token=per_token, kv_tokens=blocks * block_size, num_blocks=blocks,
        block_size=block_size, memory_model=memory_model,
    )


def plan_engine_memory(engine: EngineConfig, model: ModelSpec, gpu: GpuSpec, dtype: Dtype, kv_dtype: Dtype,
                       tp: int, pp: int) -> MemoryPlan:
    """The memory plan (KV-cache capacity) of one TP×PP replica under a scenario's engine settings."""
    return plan_memory(model, gpu, dtype, kv_dtype, tp, pp, engine.gpu_memory_utilization,
                       engine.max_num_batched_tokens, engine.block_size, engine.memory_model)
