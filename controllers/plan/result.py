"""What a plan says, as data: the `--json` contract (other tools read it), plan.json, and why the winner wins.

One entry per deployment, best first:
`{"kind": "aggregated" | "disaggregated", "deployment": [{"tp", "pp", "replicas", "classes"}] (disaggregated:
[{"label", "prefill": {"tp", "pp", "replicas"}, "decode": {"tp", "pp", "replicas"}, "classes"}]), "gpus",
"max_rate", "goodput_per_gpu", "output_tokens_per_s_per_gpu", "classes": {NAME: {"ttft_ms": {"p50", "p90"},
"tpot_ms": {"p50", "p90"}, "attainment"}}}` — `classes` of a pool: the classes routed to it; the per-GPU
figures and the class figures at `max_rate` (requests/s of the whole traffic, engine clock). Extra keys:
`rank`, `max_rate_std` (over seeds), `binding` (what stops each pool), engine options, `goodput_per_gpu_at`
(at the scenario's rates), `expected_max_rate` and `available_share` (with GPU failures: max_rate over the
states of the replicas, and its share of max_rate; the ranking's figure, controllers/plan/availability.py).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from controllers.plan.availability import one_failure
from controllers.plan.candidates import Pool
from controllers.plan.disagg import comparison
from controllers.plan.search import Evaluated, Plan
from deployments.engines.sim.perf_model import TERMS


def entry(e: Evaluated, rank: int) -> dict[str, Any]:
    """One deployment of the `--json` list."""
    c = e.candidate
    classes: dict[str, Any] = {}
    for f in e.figures:
        for name, cf in f.classes.items():
            classes[name] = {"ttft_ms": cf.ttft_ms, "tpot_ms": cf.tpot_ms, "attainment": cf.attainment}
    return {
        "rank": rank,
        "kind": c.kind,
        "deployment": [_pool(p) for p in c.pools],
        "gpus": c.gpus,
        "max_rate": e.max_rate,
        "max_rate_std": e.max_rate_std,
        "goodput_per_gpu": e.goodput_per_gpu,
        "output_tokens_per_s_per_gpu": e.output_tokens_per_s_per_gpu,
        "classes": classes,
        "binding": [cap.binding for cap in e.capacities],
        "kv_dtype": c.knobs.kv_dtype.value,
        "max_num_seqs": c.knobs.max_num_seqs,
        "max_num_batched_tokens": c.knobs.max_num_batched_tokens,
        "goodput_per_gpu_at": {f"{r:g}": g for r, g in e.goodput_at.items()},
        "expected_max_rate": e.expected_rate,
        "available_share": e.available_share,
    }


def _pool(p: Pool) -> dict[str, Any]:
    """One pool of an entry: its shape and replicas, or (disaggregated) each role's."""
    if p.prefill is None:
        return {"tp": p.shape.tp, "pp": p.shape.pp, "replicas": p.replicas, "classes": list(p.classes)}
    return {"label": p.label, "prefill": {"tp": p.prefill.shape.tp, "pp": p.prefill.shape.pp,
                                          "replicas": p.prefill.replicas},
            "decode": {"tp": p.shape.tp, "pp": p.shape.pp, "replicas": p.replicas}, "classes": list(p.classes)}


def entries(plan: Plan, top: int | None = None) -> list[dict[str, Any]]:
    return [entry(e, i + 1) for i, e in enumerate(plan.ranked[:top])]


def write_plan_json(plan: Plan, path: Path, classes: int) -> Path:
    """plan.json: the ranked deployments, every simulated candidate's screening figures, the candidates the
    steady-state estimate ruled out (never simulated), and how the search ran."""
    doc = {
        "scenario": plan.scenario,
        "objective": plan.objective,
        "gpus": plan.budget.gpus,
        "required_rate": plan.required_rate,
        "scenario_rates": plan.scenario_rates,
        "candidates": plan.candidates,
        "pool_evaluations": plan.pool_evaluations,
        "simulations": plan.simulations,
        "seconds": plan.seconds,
        "where": plan.where,
        "seeds": plan.seeds,
        "notes": [*plan.notes, NOISE_NOTE],
        "ranked": entries(plan),
        "screened": [{"deployment": e.candidate.label(classes), "gpus": e.candidate.gpus,
                      "max_rate": e.max_rate, "refined": e.refined} for e in plan.screened],
        "screened_out": [{"deployment": e.candidate.label(classes), "gpus": e.candidate.gpus,
                          "estimated_rate": e.estimated, "upper": e.upper} for e in plan.screened_out],
    }
    path.write_text(json.dumps(doc, indent=1))
    return path


NOISE_NOTE = ("max_rate is the mean over seeds of the highest total rate (found by bisection, to within a few per "
              "cent) at which every class meets its attainment target; max_rate_std is its spread over seeds. "
              "Every candidate is simulated on the same seeded request streams (common random numbers), so "
              "differences between candidates are more certain than the spread suggests.")


def why(plan: Plan, classes: int) -> list[str]:
    """Why the winner wins against the runner-up (or, when the winner splits the classes, the best homogeneous
    deployment): what stops each, how sure the ranking is over seeds, what each loses when a GPU fails, and the
    cost terms (GPU time per output token, from the simulator's breakdown) that differ most."""
    if not plan.ranked:
        return []
    best = plan.ranked[0]
    others = plan.ranked[1:]
    ref = next((e for e in others if e.candidate.homogeneous), None) if not best.candidate.homogeneous else None
    ref = ref or (others[0] if others else None)
    a = best.candidate.label(classes)
    lines = [f"winner {a}: {best.max_rate:.2f} req/s on {best.candidate.gpus} GPUs; {_limit(best)}"]
    if ref is None:
        return lines + failure_lines(best, classes)
    b = ref.candidate.label(classes)
    lines.append(f"against {b}: {ref.max_rate:.2f} req/s on {ref.candidate.gpus} GPUs; {_limit(ref)}")
    if best.seed_rates and len(best.seed_rates) == len(ref.seed_rates):
        diffs = [x - y for x, y in zip(best.seed_rates, ref.seed_rates, strict=True)]
        ahead = sum(d > 0 for d in diffs)
        lines.append(f"{a} is ahead on {ahead} of {len(diffs)} seeds (same requests for both), by "
                     f"{np.mean(diffs):+.2f} ± {np.std(diffs):.2f} req/s")
    lines += [line for e in (best, ref) for line in failure_lines(e, classes)]
    lines += kinds(plan, classes)
    ta, tb = _per_token(best), _per_token(ref)
    keys = sorted((k for k in TERMS if abs(ta.get(k, 0.0) - tb.get(k, 0.0)) > 1e-9),
                  key=lambda k: -abs(ta.get(k, 0.0) - tb.get(k, 0.0)))[:3]
    if keys:
        lines.append("GPU-ms per output token at max rate, by cost term (" + f"{a} vs {b}): " + ", ".join(
            f"{k} {ta.get(k, 0.0):.2f} vs {tb.get(k, 0.0):.2f}" for k in keys)
            + f"; all terms {sum(ta.values()):.2f} vs {sum(tb.values()):.2f}")
    return lines


def kinds(plan: Plan, classes: int) -> list[str]:
    """What the best disaggregated deployment gains over the best aggregated one, or why it loses (when the
    plan ranks both)."""
    d = next((e for e in plan.ranked if e.candidate.disaggregated), None)
    a = next((e for e in plan.ranked if not e.candidate.disaggregated), None)
    if d is None or a is None:
        return []
    return comparison(plan.setup, d.candidate, d.max_rate, a.candidate, a.max_rate,
                      (d.output_tokens_per_s_per_gpu, a.output_tokens_per_s_per_gpu))


def failure_lines(e: Evaluated, classes: int) -> list[str]:
    """What the deployment loses when a GPU fails: per pool, the share of its capacity one replica down takes
    for the restart, how often that happens, and the expected capacity over time (none without failures)."""
    a = e.availability
    if a is None or a.gpu_failure_rate <= 0:
        return []
    pools = e.pools_up
    parts = []
    for i, d in enumerate(e.failure_domains):
        where = "" if e.candidate.homogeneous else f" of its pool [{', '.join(d.pool.classes)}]"
        role = f"{d.role} " if d.role else ""
        parts.append(f"a failed GPU takes down one {role}{d.shape.label} replica{where}, {one_failure(pools, i):.0%} "
                     f"of its capacity for {a.restart_s:g} s, {a.failures_per_day(d.shape.gpus * d.replicas):.2g} "
                     "times a day")
    return [f"{e.candidate.label(classes)}: " + "; ".join(parts) + f"; expected {e.expected_rate:.3f} req/s, "
            f"{e.available_share:.4%} of {e.max_rate:.3f} (at {a.gpu_failure_rate:.3g} failures per GPU-hour)"]


def _limit(e: Evaluated) -> str:
    i = e.binding_pool
    pool = e.candidate.pools[i]
    cap = e.capacities[i]
    where = "" if e.candidate.homogeneous else f"its pool {pool.label} [{', '.join(pool.classes)}] "
    if cap.binding == "throughput":
        return f"{where}saturates before any SLO binds"
    return f"{where}limited by {'; '.join(str(m) for m in cap.misses)} just above that rate"


def _per_token(e: Evaluated) -> dict[str, float]:
    """GPU-ms per output token by cost term, over the deployment's pools (weighted by their output)."""
    total = sum(f.output_tokens_per_s for f in e.figures) or 1.0
    out: dict[str, float] = {}
    for f in e.figures:
        for k, v in f.gpu_ms_per_token.items():
            out[k] = out.get(k, 0.0) + v * f.output_tokens_per_s / total
    return out
