"""`parallax validate`: what each configuration of a scenario costs in GPUs and memory."""

from dataclasses import dataclass
from pathlib import Path

from deployments.catalog.memory import check_parallelism, plan_engine_memory
from deployments.resolve import Resolved
from loadgen.lengths import mean_lengths
from schema.deployment import ParallelConfig


@dataclass(frozen=True)
class ConfigFootprint:
    """One configuration's replicas of one shape: all of them, or one role of a disaggregated configuration."""

    name: str
    role: str | None
    tp: int
    pp: int
    replicas: int
    gpus: int
    weight_gb_per_gpu: float
    kv_gb_per_gpu: float
    kv_tokens_per_replica: int
    seqs_per_replica: int
    fits: bool


def node_shapes(r: Resolved) -> list[ParallelConfig]:
    """Every TP×PP split of one node the model allows: what `parallax plan` chooses from for a scenario that
    has no configurations yet."""
    gpn = r.scenario.hardware.gpus_per_node
    out = []
    for tp in range(1, gpn + 1):
        for pp in range(1, gpn // tp + 1):
            try:
                check_parallelism(r.model, tp, pp)
            except ValueError:
                continue
            out.append(ParallelConfig(name=f"tp{tp}pp{pp}", tp=tp, pp=pp))
    return out


def footprints(r: Resolved, configs: list[ParallelConfig] | None = None) -> list[ConfigFootprint]:
    """Memory plan of every configuration (or of `configs`), one row per role of a disaggregated one; sequences
    counted at the classes' mean lengths."""
    s = r.scenario
    mean_tokens = 0.0
    for tc in s.classes:
        isl, osl = mean_lengths(tc, Path(r.source).parent)
        mean_tokens += tc.share * (isl + osl)
    out = []
    for c in s.configurations if configs is None else configs:
        for g in c.groups:
            plan = plan_engine_memory(s.engine, r.model, r.gpu, s.dtype, s.resolved_kv_dtype, g.tp, g.pp)
            seqs = int(plan.kv_tokens // mean_tokens) if mean_tokens > 0 else 0
            out.append(ConfigFootprint(
                name=c.name, role=g.role, tp=g.tp, pp=g.pp, replicas=g.replicas, gpus=g.gpus,
                weight_gb_per_gpu=plan.weight_bytes / 1e9, kv_gb_per_gpu=plan.kv_bytes / 1e9,
                kv_tokens_per_replica=plan.kv_tokens, seqs_per_replica=seqs, fits=plan.fits,
            ))
    return out
