"""Static-batch mode, the study's method (arXiv 2603.05692): one prefill of B prompts of ISL tokens, then
OSL decode steps with growing context, no continuous batching.

Batch size B is what one pass carries (one micro-batch). Under PP, PP micro-batches of B are in flight
(the study's "several batches in flight"), so a replica holds PP·B sequences; a sequence's TTFT is one
pass over every stage, and its steady decode step is the longer of one pass and PP slowest-stage
intervals. Throughput = (PP·B · OSL · replicas) / (prefill + OSL · decode step).

This is the batch that fits the KV cache at once; a larger one runs in waves through the scheduler
(`simulate.simulate_static`).
"""

import math
from dataclasses import dataclass, field

from deployments.catalog.memory import MemoryPlan, plan_memory
from deployments.engines.sim.perf_model import TERMS, PerfModel
from deployments.engines.sim.work import BatchShape, StepCost


@dataclass(frozen=True)
class StaticBatchResult:
    batch_size: int
    isl: int
    osl: int
    replicas: int
    prefill_ms: float          # TTFT of the batch: one prefill pass over every stage
    decode_step_ms: float      # mean decode step (TPOT) over the OSL steps
    e2e_ms: float              # the batch's time in the study's formula: prefill + OSL · decode step
    output_tokens_per_s: float
    max_batch: int             # largest B whose PP·B sequences of ISL+OSL tokens fit in the KV cache
    global_batch: int          # sequences in flight per replica: PP·B
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> term -> share of time

    @property
    def fits(self) -> bool:
        return self.batch_size <= self.max_batch


def _shares(terms: dict[str, float]) -> dict[str, float]:
    total = sum(terms.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in terms.items()}


def default_plan(perf: PerfModel) -> MemoryPlan:
    """The memory plan of `perf`'s replica with vLLM's default engine settings."""
    return plan_memory(perf.model, perf.gpu, perf.dtype, perf.kv_dtype, perf.tp, perf.pp)


def kv_sequences(plan: MemoryPlan, isl: int, osl: int) -> int:
    """Sequences of ISL+OSL tokens (block-rounded) one replica's KV cache holds at once."""
    return plan.num_blocks // math.ceil((isl + osl) / plan.block_size)


def max_static_batch(perf: PerfModel, isl: int, osl: int, plan: MemoryPlan | None = None) -> int:
    """Largest per-pass batch whose PP·B sequences of ISL+OSL tokens fit in one replica's KV cache
    (`plan`: the replica's memory plan; vLLM's default one when None)."""
    return kv_sequences(plan or default_plan(perf), isl, osl) // perf.pp


def static_batch(perf: PerfModel, batch_size: int, isl: int, osl: int, replicas: int = 1,
                 plan: MemoryPlan | None = None) -> StaticBatchResult:
    """Prefill latency, mean decode step and throughput of B prompts of ISL tokens generating OSL each."""
    if batch_size < 1 or isl < 1 or osl < 1 or replicas < 1:
        raise ValueError("batch_size, isl, osl and replicas must be at least 1")
    b = batch_size
    prefill = perf.step(BatchShape(prefill_tokens=b * isl, prefill_seqs=b,
                                   prefill_attn_pairs=b * isl * (isl + 1) / 2.0))
    # Decode cost is affine in the context, so the mean over steps with context ISL … ISL+OSL−1 is the
    # mean of the first and last step.
    first = perf.step(BatchShape(decode_seqs=b, decode_context=b * isl))
    last = perf.step(BatchShape(decode_seqs=b, decode_context=b * (isl + osl - 1)))
    pp = perf.pp

    def interval(c: StepCost) -> float:
        return max(c.latency_s, pp * c.stage_s)

    decode_s = (interval(first) + interval(last)) / 2.0
    total_s = interval(prefill) + osl * decode_s
    decode_terms = {k: (first.terms[k] + last.terms[k]) / 2.0 for k in TERMS}
    return StaticBatchResult(
        batch_size=b, isl=isl, osl=osl, replicas=replicas,
        prefill_ms=prefill.latency_s * 1e3,
        decode_step_ms=decode_s * 1e3,
        e2e_ms=total_s * 1e3,
        output_tokens_per_s=pp * b * osl * replicas / total_s,
        max_batch=max_static_batch(perf, isl, osl, plan),
        global_batch=pp * b,
        breakdown={"prefill": _shares(prefill.terms), "decode": _shares(decode_terms)},
    )
