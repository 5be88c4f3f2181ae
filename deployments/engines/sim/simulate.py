"""One configuration, one workload: the figures `parallax simulate` prints (library side)."""

from typing import Any

from deployments.engines.sim.offline import run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.static_batch import static_batch
from deployments.engines.sim.stats import summarize
from deployments.engines.sim.workload import fixed_workload


def simulate_static(factory: ReplicaFactory, batch_size: int, input_len: int, output_len: int,
                    replicas: int = 1) -> dict[str, Any]:
    """The study's static-batch figures; ValueError when the batch does not fit the KV cache."""
    e = factory.engine
    r = static_batch(factory.cost_model, batch_size, input_len, output_len, replicas,
                     e.gpu_memory_utilization, e.block_size)
    if not r.fits:
        raise ValueError(f"--batch-size {batch_size}: {r.global_batch} sequences of {input_len}+{output_len} tokens "
                         f"exceed the KV cache ({factory.plan.kv_tokens:,} tokens); the largest batch is "
                         f"{r.max_batch}")
    return {"mode": "static-batch", "batch_size": batch_size, "prefill_ms": r.prefill_ms,
            "decode_step_ms": r.decode_step_ms, "output_tokens_per_s": r.output_tokens_per_s,
            "max_batch": r.max_batch, "global_batch": r.global_batch,
            "kv_cache_tokens": factory.plan.kv_tokens, "breakdown": r.breakdown}


def simulate_continuous(factory: ReplicaFactory, input_len: int, output_len: int, num_requests: int,
                        replicas: int = 1, concurrency: int | None = None, request_rate: float | None = None,
                        seed: int = 0) -> dict[str, Any]:
    """Continuous batching in virtual time: closed loop (`concurrency`), Poisson (`request_rate`), or all
    requests queued at t=0 (neither: maximum throughput)."""
    if input_len + output_len > factory.max_model_len:
        raise ValueError(f"--input-len {input_len} + --output-len {output_len} exceed the "
                         f"{factory.max_model_len}-token limit of one replica (KV cache / model context); "
                         "shorten them or add GPUs")
    reqs = fixed_workload(num_requests, input_len, output_len, request_rate, seed)
    res = run_offline(factory, reqs, replicas=replicas, concurrency=concurrency)
    mode = "concurrency" if concurrency else "request-rate" if request_rate else "max-throughput"
    return {"mode": mode, **summarize(res), "kv_cache_tokens": factory.plan.kv_tokens}
