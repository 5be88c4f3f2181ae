"""How long a new replica of a configuration takes to become ready: the cost of a `Deploy` or `Scale` up.

A replica's start is its weights read onto its GPUs (every GPU loads its own share at once, over its own
host link) plus the engine's warm-up (memory profiling, KV cache allocation, CUDA-graph capture):

    modelled_start_s = max over the replica's GPUs of (weight bytes ÷ host-to-device bandwidth) + ENGINE_WARMUP_S

The host-to-device bandwidth is the GPU catalog's (`GpuSpec.host_to_device_gbps`, PCIe per the datasheets).
The simulated engine waits `engine.startup_s` (this figure by default) when it joins a running fleet; for
vLLM a start is measured (the fleet times every `deploy_config`) and the measurement wins over the model.
`start_seconds` is the one function the transition planner's `start_s` callable comes from.
"""

from collections.abc import Callable, Mapping

from deployments.catalog.gpus import GB
from deployments.catalog.memory import weight_bytes_per_gpu
from deployments.resolve import Resolved
from schema.deployment import ParallelConfig

# The engine's warm-up after its weights are in: "commonly tens of seconds for 70B-class models"
# (shared/LIVE-CONTROL.md, "Transitions and their cost": memory profiling and CUDA-graph capture). Not
# measured here; the middle of that range. The vLLM tier measures its own start instead.
ENGINE_WARMUP_S = 30.0


def weights_load_s(resolved: Resolved, config: ParallelConfig) -> float:
    """Seconds for the most loaded GPU of a replica of `config` to receive its weights from the host."""
    s = resolved.scenario
    most = max(weight_bytes_per_gpu(resolved.model, s.dtype, g.tp, g.pp, s.engine.memory_model)
               for g in config.groups)
    return most / (resolved.gpu.host_to_device_gbps * GB)


def modelled_start_s(resolved: Resolved, config: ParallelConfig) -> float:
    """The modelled start of one replica (module docstring), or `engine.startup_s` where the scenario sets it;
    engine-clock seconds."""
    given = resolved.scenario.engine.startup_s
    if given is not None:
        return given
    return weights_load_s(resolved, config) + ENGINE_WARMUP_S


def start_seconds(resolved: Resolved, measured: Mapping[str, float] | None = None
                  ) -> Callable[[ParallelConfig], float]:
    """The planner's `start_s`: a configuration's measured start (seconds, by configuration name; what
    `fleet.deploy_config` returned) where there is one, else the modelled start."""
    seen = dict(measured or {})

    def start_s(config: ParallelConfig) -> float:
        return seen[config.name] if config.name in seen else modelled_start_s(resolved, config)
    return start_s
