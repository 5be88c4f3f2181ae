"""Fluid (steady-state) estimates of a continuous-batching engine: fast enough to fit constants on.

Not a scheduler: the average iteration of a full engine. A running batch of R sequences decodes R
tokens per step while prefill chunks bring in R/OSL new prompts per step (R·ISL/OSL prompt tokens),
within the engine's token budget per step. Admission reserves ISL+OSL tokens of KV cache per
sequence (TensorRT-LLM's guaranteed-no-evict policy), so R ≤ KV tokens / (ISL+OSL).
"""

from dataclasses import dataclass

from deployments.engines.sim.perf_model import PerfModel
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.work import BatchShape
from schema.deployment import EngineConfig


@dataclass(frozen=True)
class SteadyState:
    running: float
    step_s: float
    output_tokens_per_s: float
    ttft_s: float


def kv_capacity_seqs(factory: ReplicaFactory, isl: int, osl: int) -> int:
    """Sequences of ISL+OSL tokens whose whole KV cache fits one replica at once."""
    return factory.plan.kv_tokens // (isl + osl)


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


def _running_limit(factory: ReplicaFactory, isl: int, osl: int) -> float:
    e: EngineConfig = factory.engine
    return min(float(e.max_num_seqs), float(kv_capacity_seqs(factory, isl, osl)),
               e.max_num_batched_tokens * osl / (isl + osl))


def max_throughput(factory: ReplicaFactory, isl: int, osl: int) -> SteadyState:
    """All requests queued at once: the largest running batch that memory, max_num_seqs and the token
    budget allow, each step carrying its share of prefill."""
    decodes = _running_limit(factory, isl, osl)
    step = _mixed_step(factory.cost_model, decodes, isl, osl)
    return SteadyState(decodes, step, decodes / step, float("nan"))


def at_step_time(factory: ReplicaFactory, isl: int, osl: int, step_s: float) -> SteadyState:
    """The largest running batch whose average iteration (with its share of prefill) takes at most
    `step_s`: the operating point of a server held to a time per output token (MLPerf's Server mode
    run at the measured TPOT). Bisection on the batch; capped by what memory and the engine allow."""
    perf = factory.cost_model
    hi = _running_limit(factory, isl, osl)
    lo = 1.0
    if _mixed_step(perf, lo, isl, osl) >= step_s:
        r = lo
    elif _mixed_step(perf, hi, isl, osl) <= step_s:
        r = hi
    else:
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _mixed_step(perf, mid, isl, osl) <= step_s else (lo, mid)
        r = lo
    step = _mixed_step(perf, r, isl, osl)
    return SteadyState(r, step, r / step, float("nan"))


def closed_loop(factory: ReplicaFactory, concurrency: int, isl: int, osl: int) -> SteadyState:
    """`concurrency` users each sending the next request when the previous one finished."""
    perf = factory.cost_model
    running = min(concurrency, kv_capacity_seqs(factory, isl, osl), factory.engine.max_num_seqs)
    # A request's own prefill is its TTFT; its decode steps carry the other users' prefills.
    step = _mixed_step(perf, running, isl, osl, prefilling=running - 1)
    prefill = perf.step(BatchShape(prefill_tokens=isl, prefill_seqs=1, prefill_attn_pairs=isl * (isl + 1) / 2.0,
                                   decode_seqs=running - 1, decode_context=(running - 1) * (isl + osl // 2)))
    throughput = running / step
    cycle = concurrency * osl / throughput
    ttft = max(prefill.latency_s, cycle - (osl - 1) * step)
    return SteadyState(running, step, throughput, ttft)
