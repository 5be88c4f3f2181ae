"""`parallax validate`: what each configuration of a scenario costs in GPUs and memory."""

from dataclasses import dataclass
from pathlib import Path

from controllers.scenario import Resolved


@dataclass(frozen=True)
class ConfigFootprint:
    name: str
    tp: int
    pp: int
    replicas: int
    gpus: int
    weight_gb_per_gpu: float
    kv_gb_per_gpu: float
    kv_tokens_per_replica: int
    seqs_per_replica: int
    fits: bool


def footprints(r: Resolved) -> list[ConfigFootprint]:
    """Memory plan of every configuration; sequences counted at the classes' mean lengths."""
    s = r.scenario
    mean_tokens = 0.0
    for tc in s.classes:
        isl, osl = tc.mean_lengths(Path(r.source).parent)
        mean_tokens += tc.share * (isl + osl)
    out = []
    for c in s.configurations:
        plan = s.engine.plan_memory(r.model, r.gpu, s.dtype, s.resolved_kv_dtype, c.tp, c.pp)
        seqs = int(plan.kv_tokens // mean_tokens) if mean_tokens > 0 else 0
        out.append(ConfigFootprint(
            name=c.name, tp=c.tp, pp=c.pp, replicas=c.replicas, gpus=c.gpus,
            weight_gb_per_gpu=plan.weight_bytes / 1e9, kv_gb_per_gpu=plan.kv_bytes / 1e9,
            kv_tokens_per_replica=plan.kv_tokens, seqs_per_replica=seqs, fits=plan.fits,
        ))
    return out
