"""From a scenario's deployment spec to vLLM engine arguments and the environment its workers need.

Pure functions: no vLLM import, so they are checked by unit tests and by `parallax validate`.
"""

import os
from dataclasses import dataclass
from typing import Any

from schema.deployment import DeploymentSpec, ParallelConfig
from schema.dtypes import Dtype

# Weight dtype → vLLM's (dtype, quantization). FP8 / FP4 checkpoints carry their own quantization
# config, so only the activation dtype is named; an unquantized checkpoint needs `quantization: fp8`
# in engine_args for online FP8.
_VLLM_DTYPE = {Dtype.fp32: "float32", Dtype.bf16: "bfloat16", Dtype.fp16: "float16",
               Dtype.fp8: "bfloat16", Dtype.fp4: "bfloat16"}
_KV_DTYPE = {Dtype.fp8: "fp8"}


@dataclass(frozen=True)
class VllmLaunch:
    """What one replica's AsyncLLM is started with."""

    engine_kwargs: dict[str, Any]
    env: dict[str, str]
    platform: str  # "cpu" | "gpu"


def cpu_thread_binding(world_size: int, cores: list[int]) -> str:
    """VLLM_CPU_OMP_THREADS_BIND: one disjoint core range per rank, e.g. '0|1' or '0-7|8-15'."""
    if world_size > len(cores):
        raise ValueError(
            f"tp×pp={world_size} needs at least {world_size} CPU cores on the CPU build of vLLM, "
            f"this machine offers {len(cores)}; lower tp or pp"
        )
    per_rank = len(cores) // world_size
    groups = [sorted(cores)[i * per_rank:(i + 1) * per_rank] for i in range(world_size)]
    return "|".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)


def launch_for(spec: DeploymentSpec, config: ParallelConfig, platform: str,
               cores: list[int] | None = None) -> VllmLaunch:
    """Engine kwargs and env for `config` of `spec` on `platform` ("cpu" or "gpu").

    `engine.engine_args` from the scenario override every derived value.
    """
    if spec.engine.model_path is None:
        raise ValueError("engine.model_path: the vllm engine needs a local model folder; set model_path")
    world = config.tp * config.pp
    e = spec.engine
    kwargs: dict[str, Any] = {
        "model": e.model_path,
        "served_model_name": config.name,
        "tensor_parallel_size": config.tp,
        "pipeline_parallel_size": config.pp,
        "max_num_seqs": e.max_num_seqs,
        # The simulator's PP scheduling (SCHEDULER.md "Pipeline parallelism under continuous batching"):
        # each of the PP micro-batches in flight gets 1/PP of the step's token budget, so one long prompt
        # chunk does not stall the stages behind it. vLLM V1 gives every micro-batch the whole budget.
        "max_num_batched_tokens": max(1, e.max_num_batched_tokens // config.pp),
        "block_size": e.block_size,
        "seed": e.seed,
        "disable_log_stats": False,  # the stat loggers feed the metrics and EngineStats
    }
    if e.max_model_len is not None:
        kwargs["max_model_len"] = e.max_model_len
    env: dict[str, str] = {}
    if platform == "cpu":
        # bf16 on CPU died with an illegal instruction here; fp32 always works.
        kwargs["dtype"] = "float32"
        # Eager starts in ~14 s instead of 25-40 s, but pipeline parallelism needs compiled mode.
        kwargs["enforce_eager"] = config.pp == 1
        # The CPU attention backend takes KV blocks in multiples of 32 tokens only.
        kwargs["block_size"] = -(-e.block_size // 32) * 32
        if world > 1:
            # The `ray` executor is refused on CPU; `mp` needs one core group per rank.
            kwargs["distributed_executor_backend"] = "mp"
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(world, cores or sorted(os.sched_getaffinity(0)))
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB; the default grabs a large share of host memory
    else:
        kwargs["dtype"] = _VLLM_DTYPE[spec.dtype]
        kwargs["gpu_memory_utilization"] = e.gpu_memory_utilization
        if spec.resolved_kv_dtype in _KV_DTYPE:
            kwargs["kv_cache_dtype"] = _KV_DTYPE[spec.resolved_kv_dtype]
        # Always Ray's executor, TP1 included (as Ray Serve LLM: VLLMEngineConfig.get_initialization_kwargs):
        # every rank is a Ray actor holding one GPU bundle of the replica's placement group. Without it a
        # TP1 engine runs the model in the engine-core process, a child of the replica actor, which holds
        # no GPU and so sees them all: every TP1 replica of a node would open cuda:0 (GPU.md, bug 1).
        kwargs["distributed_executor_backend"] = "ray"
    kwargs.update(e.engine_args)
    return VllmLaunch(engine_kwargs=kwargs, env=env, platform=platform)
