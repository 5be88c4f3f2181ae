"""One configuration, one workload: the figures `parallax simulate` prints (library side)."""

import math
from typing import Any

from deployments.engines.sim.configuration import Replicas
from deployments.engines.sim.disagg import DisaggregatedReplicas
from deployments.engines.sim.offline import run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.static_batch import kv_sequences, static_batch
from deployments.engines.sim.stats import distribution, summarize
from deployments.engines.sim.workload import fixed_workload


def simulate_static(factory: ReplicaFactory, batch_size: int, input_len: int, output_len: int,
                    replicas: int = 1) -> dict[str, Any]:
    """The study's static-batch figures for a batch the KV cache holds at once; a larger batch is run the way
    `vllm bench latency` runs it: all its requests submitted at once, the scheduler admitting them in waves
    as the KV cache allows (vLLM memory model only: the study ran only batches that fit)."""
    r = static_batch(factory.cost_model, batch_size, input_len, output_len, replicas, factory.plan)
    out: dict[str, Any] = {"mode": "static-batch", "batch_size": batch_size, "memory_model": factory.plan.memory_model,
                           "max_batch": r.max_batch, "global_batch": r.global_batch,
                           "kv_cache_tokens": factory.plan.kv_tokens}
    if r.fits:
        return out | {"waves": 1, "prefill_ms": r.prefill_ms, "decode_step_ms": r.decode_step_ms, "e2e_ms": r.e2e_ms,
                      "output_tokens_per_s": r.output_tokens_per_s, "breakdown": r.breakdown}
    too_big = (f"--batch-size {batch_size}: {r.global_batch} sequences of {input_len}+{output_len} tokens exceed the "
               f"KV cache ({factory.plan.kv_tokens:,} tokens); the largest batch is {r.max_batch}")
    if factory.plan.memory_model == "study":
        raise ValueError(f"{too_big} (the study runs only batches that fit; --memory-model vllm runs larger ones "
                         "in waves)")
    if input_len + output_len > factory.max_model_len:
        raise ValueError(f"{too_big}, and one sequence exceeds the {factory.max_model_len}-token limit of a replica")
    res = run_offline(factory, fixed_workload(r.global_batch, input_len, output_len))
    at_once = max(1, min(factory.engine.max_num_seqs, kv_sequences(factory.plan, input_len, output_len)))
    s = summarize(res)
    return out | {
        "waves": math.ceil(r.global_batch / at_once),
        "e2e_ms": res.makespan * 1e3,
        "output_tokens_per_s": r.global_batch * output_len * replicas / res.makespan,
        "preemptions": s["preemptions"],
        "ttft_ms": s["ttft_ms"], "tpot_ms": s["tpot_ms"],
        "breakdown": s["breakdown"],
    }


def simulate_continuous(replicas: Replicas, input_len: int, output_len: int, num_requests: int,
                        concurrency: int | None = None, request_rate: float | None = None,
                        seed: int = 0) -> dict[str, Any]:
    """Continuous batching in virtual time: closed loop (`concurrency`), Poisson (`request_rate`), or all
    requests queued at t=0 (neither: maximum throughput), through an aggregated or a disaggregated
    configuration's replicas (the latter adds its KV handoffs' durations, `kv_transfer_ms`)."""
    if input_len + output_len > replicas.max_model_len:
        raise ValueError(f"--input-len {input_len} + --output-len {output_len} exceed the "
                         f"{replicas.max_model_len}-token limit of one replica (KV cache / model context); "
                         "shorten them or add GPUs")
    reqs = fixed_workload(num_requests, input_len, output_len, request_rate, seed)
    res = replicas.run(reqs, concurrency)
    mode = "concurrency" if concurrency else "request-rate" if request_rate else "max-throughput"
    out = {"mode": mode, **summarize(res), "kv_cache_tokens": replicas.kv_cache_tokens,
           "memory_model": replicas.engine.memory_model}
    if isinstance(replicas, DisaggregatedReplicas):
        out["kv_transfer_ms"] = distribution([r.kv_transfer_s for r in res.records if r.output_len > 1])
    return out
