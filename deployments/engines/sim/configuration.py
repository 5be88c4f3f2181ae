"""A scenario's configuration simulated offline, whichever its kind: R replicas that each prefill and decode
(`AggregatedReplicas`, over `run_offline`), or prefill and decode replicas with KV handoffs between them
(`DisaggregatedReplicas`). Both `run` a workload into the same `OfflineResult`, so the sweep, the what-if
and the planner judge either alike.
"""

from collections.abc import Sequence as Seq

from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.disagg import DisaggregatedReplicas
from deployments.engines.sim.offline import OfflineResult, RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from schema.deployment import DeploymentSpec, EngineConfig, ParallelConfig


class AggregatedReplicas:
    """`replicas` copies of one replica shape, requests dispatched least-loaded (or to the replica they name)."""

    def __init__(self, factory: ReplicaFactory, replicas: int):
        self.factory, self.replicas = factory, replicas

    @property
    def max_model_len(self) -> int:
        """The longest request (prompt + output) one replica holds."""
        return self.factory.max_model_len

    @property
    def engine(self) -> EngineConfig:
        return self.factory.engine

    @property
    def kv_cache_tokens(self) -> int:
        """KV-cache tokens of one replica."""
        return self.factory.plan.kv_tokens

    def run(self, requests: Seq[RequestSpec], concurrency: int | None = None) -> OfflineResult:
        return run_offline(self.factory, requests, self.replicas, concurrency)


Replicas = AggregatedReplicas | DisaggregatedReplicas


def configuration_replicas(spec: DeploymentSpec, parallel: ParallelConfig, model: ModelSpec,
                           gpu: GpuSpec) -> Replicas:
    """The replicas of configuration `parallel`, built exactly as the live simulated engine builds them."""
    if parallel.disagg is not None:
        return DisaggregatedReplicas.for_deployment(spec, parallel, model, gpu)
    return AggregatedReplicas(ReplicaFactory.for_deployment(spec, parallel, model, gpu), parallel.replicas)
