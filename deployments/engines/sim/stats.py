"""Latency and throughput summaries of simulated requests (the `parallax simulate` JSON keys)."""

from collections.abc import Sequence as Seq
from typing import Any

import numpy as np

from deployments.engines.sim.offline import OfflineResult, RequestRecord


def distribution(values_s: Seq[float] | np.ndarray) -> dict[str, float]:
    """{mean, p50, p90, p99} in milliseconds of values given in seconds (zeros when empty)."""
    a = np.asarray(values_s, dtype=float) * 1e3
    if a.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def inter_token_gaps(records: Seq[RequestRecord]) -> np.ndarray:
    """Every gap between consecutive tokens of every request, in seconds."""
    parts = [np.diff(r.token_times) for r in records if len(r.token_times) > 1]
    return np.concatenate(parts) if parts else np.zeros(0)


def latencies(records: Seq[RequestRecord]) -> dict[str, dict[str, float]]:
    """TTFT, TPOT, ITL and E2E distributions (ms) of some requests."""
    return {
        "ttft_ms": distribution([r.ttft for r in records]),
        "tpot_ms": distribution([r.tpot for r in records if r.output_len > 1]),
        "itl_ms": distribution(inter_token_gaps(records)),
        "e2e_ms": distribution([r.e2e for r in records]),
    }


def summarize(result: OfflineResult) -> dict[str, Any]:
    """Throughput, latency distributions and the cost-term breakdown of one offline run.

    `max_batch` is the largest number of sequences one iteration (micro-batch) carried.
    """
    recs = result.records
    span = result.makespan
    out_tokens = sum(r.output_len for r in recs)
    terms: dict[str, float] = {}
    for core in result.cores:
        for k, v in core.term_seconds.items():
            terms[k] = terms.get(k, 0.0) + v
    total = sum(terms.values())
    return {
        "num_requests": len(recs),
        "duration_s": span,
        "output_tokens_per_s": out_tokens / span if span > 0 else 0.0,
        "requests_per_s": len(recs) / span if span > 0 else 0.0,
        **latencies(recs),
        "preemptions": sum(r.preemptions for r in recs),
        "max_batch": max((c.peak_batch for c in result.cores), default=0),
        "breakdown": {k: v / total for k, v in sorted(terms.items())} if total > 0 else {},
    }
