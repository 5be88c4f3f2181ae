"""Fluid (steady-state) estimates of a continuous-batching engine, used to fit the performance model.

Not a scheduler: the average iteration of a full engine. A running batch of R sequences decodes R
tokens per step while prefill chunks bring in R/OSL new prompts per step (R·ISL/OSL prompt tokens),
within a token budget per step. Admission reserves ISL+OSL tokens of KV cache per sequence
(TensorRT-LLM's guaranteed-no-evict policy), so R ≤ KV tokens / (ISL+OSL).
"""

from dataclasses import dataclass

from deployments.catalog.memory import plan_memory
from deployments.engines.sim.perf_model import PerfModel
from deployments.engines.sim.work import BatchShape

# The engine settings assumed for the TensorRT-LLM max-throughput runs: a tuned engine with a large
# batch, an 8192-token step budget and ~0.9 of free memory for the KV cache.
MAX_NUM_SEQS = 2048
MAX_NUM_TOKENS = 8192
MEMORY_UTILIZATION = 0.95


@dataclass(frozen=True)
class SteadyState:
    running: float
    step_s: float
    output_tokens_per_s: float
    ttft_s: float


def kv_capacity_seqs(perf: PerfModel, isl: int, osl: int) -> int:
    plan = plan_memory(perf.model, perf.gpu, perf.dtype, perf.kv_dtype, perf.tp, perf.pp,
                       gpu_memory_utilization=MEMORY_UTILIZATION, max_num_batched_tokens=MAX_NUM_TOKENS)
    return plan.kv_tokens // (isl + osl)


def _mixed_step(perf: PerfModel, decodes: float, isl: int, osl: int, prefilling: float | None = None) -> float:
    """Average iteration with `decodes` sequences decoding and `prefilling` (default: all of them)
    sequences' share of prefill work."""
    prefill_tokens = round((decodes if prefilling is None else prefilling) * isl / osl)
    d = round(decodes)
    shape = BatchShape(
        prefill_tokens=prefill_tokens,
        prefill_seqs=max(1, round(decodes / osl)) if prefill_tokens else 0,
        prefill_attn_pairs=prefill_tokens * (isl + 1) / 2.0,
        decode_seqs=d,
        decode_context=round(d * (isl + osl / 2.0)),
    )
    return perf.step(shape).stage_s


def max_throughput(perf: PerfModel, isl: int, osl: int) -> SteadyState:
    """All requests queued at once: the largest running batch that memory, max_num_seqs and the token
    budget allow, each step carrying its share of prefill."""
    running = min(MAX_NUM_SEQS, kv_capacity_seqs(perf, isl, osl))
    decodes = min(float(running), MAX_NUM_TOKENS * osl / (isl + osl))
    step = _mixed_step(perf, decodes, isl, osl)
    return SteadyState(running, step, decodes / step, float("nan"))


def closed_loop(perf: PerfModel, concurrency: int, isl: int, osl: int) -> SteadyState:
    """`concurrency` users each sending the next request when the previous one finished."""
    running = min(concurrency, kv_capacity_seqs(perf, isl, osl), MAX_NUM_SEQS)
    # A request's own prefill is its TTFT; its decode steps carry the other users' prefills.
    step = _mixed_step(perf, running, isl, osl, prefilling=running - 1)
    prefill = perf.step(BatchShape(prefill_tokens=isl, prefill_seqs=1, prefill_attn_pairs=isl * (isl + 1) / 2.0,
                                   decode_seqs=running - 1, decode_context=(running - 1) * (isl + osl // 2)))
    throughput = running / step
    cycle = concurrency * osl / throughput
    ttft = max(prefill.latency_s, cycle - (osl - 1) * step)
    return SteadyState(running, step, throughput, ttft)
