"""Build one simulated replica (scheduler + KV cache + performance model) from the configuration."""

from deployments.catalog.gpus import GpuSpec
from deployments.catalog.memory import MemoryPlan, check_parallelism, plan_engine_memory
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.block_manager import BlockManager
from deployments.engines.sim.calibration import Calibration, load_calibration
from deployments.engines.sim.core import EngineCore
from deployments.engines.sim.perf_model import PerfModel
from deployments.engines.sim.scheduler import Scheduler
from deployments.placement import inter_node_hops
from schema.deployment import DeploymentSpec, EngineConfig, ParallelConfig, Role
from schema.dtypes import Dtype


class ReplicaFactory:
    """Fresh `EngineCore`s for one model × GPU × dtype × (TP, PP); the performance model is shared.

    `role`: None for an aggregated replica; "prefill" keeps each finished sequence's KV cache until it is
    handed to a decode replica (`EngineCore.release_kv`); "decode" replicas take handoffs
    (`EngineCore.submit_handoff`), which any core accepts.
    """

    def __init__(self, model: ModelSpec, gpu: GpuSpec, dtype: Dtype, kv_dtype: Dtype, tp: int, pp: int,
                 engine: EngineConfig | None = None, calibration: Calibration | None = None,
                 inter_node_hops: int = 0, role: Role | None = None):
        """Raise ValueError (a message naming the fix) when the configuration cannot run.
        `inter_node_hops`: pipeline transfers that cross nodes (stages spread over nodes)."""
        self.engine = engine or EngineConfig()
        check_parallelism(model, tp, pp)
        if not gpu.supports(dtype):
            gpu.compute_dtype(dtype)   # raises for a dtype the GPU cannot run at all
        e = self.engine
        self.plan: MemoryPlan = plan_engine_memory(e, model, gpu, dtype, kv_dtype, tp, pp)
        if not self.plan.fits:
            raise ValueError(
                f"{model.name} {dtype.value} on tp{tp}×pp{pp} {gpu.name} leaves no room for the KV cache "
                f"({self.plan.weight_bytes / 1e9:.1f} GB of weights per GPU); raise tp or pp, or use a smaller dtype")
        if calibration is None and e.calibration is not None:
            calibration = load_calibration(e.calibration)
        self.calibration = calibration
        self.cost_model = PerfModel(model, gpu, dtype, kv_dtype, tp, pp, calibration, inter_node_hops)
        self.tp, self.pp, self.role = tp, pp, role
        self.max_model_len = min(e.max_model_len or model.max_context, self.plan.kv_tokens)

    @classmethod
    def for_deployment(cls, spec: DeploymentSpec, parallel: ParallelConfig, model: ModelSpec,
                       gpu: GpuSpec, role: Role | None = None) -> "ReplicaFactory":
        """The replicas of one configuration of a deployment (of one `role` of a disaggregated one), exactly as
        the live simulated engine builds them (engine settings, calibration, pipeline transfers across nodes):
        what-if, sweep and the live engine all predict with this one."""
        group = next((g for g in parallel.groups if g.role == role), None)
        if group is None:
            raise ValueError(f"configuration {parallel.name!r} has no {role or 'aggregated'} replicas"
                             + ("; it is disaggregated: give role prefill or decode" if role is None else ""))
        return cls(model, gpu, spec.dtype, spec.resolved_kv_dtype, group.tp, group.pp, spec.engine,
                   inter_node_hops=inter_node_hops(group, spec.hardware.gpus_per_node), role=role)

    def __call__(self) -> EngineCore:
        e = self.engine
        sched = Scheduler(BlockManager(self.plan.num_blocks, self.plan.block_size), e.max_num_seqs,
                          e.max_num_batched_tokens, microbatches=self.pp, hold_kv=self.role == "prefill")
        return EngineCore(sched, self.cost_model, self.max_model_len)
