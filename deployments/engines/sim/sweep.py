"""A scenario's configurations over its rate sweep, simulated offline: latency-throughput curves.

The controller's what-if and the final report reuse `simulate_scenario`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.engines.sim.configuration import configuration_replicas
from deployments.engines.sim.stats import latencies, summarize
from deployments.engines.sim.workload import class_mix
from deployments.resolve import Resolved
from schema.traffic import ClosedLoop, ConstantArrival, GammaArrival, PoissonArrival


@dataclass(frozen=True)
class SweepPoint:
    """One configuration at one offered rate (requests/s, or users for a closed loop)."""

    config: str
    tp: int
    pp: int
    replicas: int
    rate: float
    summary: dict[str, Any]                 # the `parallax simulate --json` keys, whole traffic
    classes: dict[str, dict[str, Any]]      # per SLA class: latencies, slo_attainment, requests
    disagg: dict[str, Any] | None = None    # a disaggregated configuration's roles: {prefill: {tp, pp, replicas}, …}


def simulate_scenario(resolved: Resolved, rates: list[float] | None = None,
                      seed: int | None = None) -> list[SweepPoint]:
    """Every configuration of the scenario at every rate (default: `load.rates`, else the arrival's own)."""
    s = resolved.scenario
    arrival = s.load.arrival
    if not isinstance(arrival, PoissonArrival | GammaArrival | ConstantArrival | ClosedLoop):
        raise ValueError(f"load.arrival: simulate sweeps poisson, gamma, constant or closed arrivals, not "
                         f"{arrival.kind}; change load.arrival.kind")
    own = float(arrival.concurrency) if isinstance(arrival, ClosedLoop) else arrival.rate
    sweep = rates or s.load.rates or [own]
    seed = s.engine.seed if seed is None else seed
    base_dir = Path(resolved.source).parent
    points = []
    for c in s.configurations:
        replicas = configuration_replicas(s, c, resolved.model, resolved.gpu)
        for rate in sweep:
            reqs, concurrency = class_mix(s.classes, arrival, rate, s.load.duration_s, seed, base_dir)
            res = replicas.run(reqs, concurrency)
            summary = summarize(res) | {"kv_cache_tokens": replicas.kv_cache_tokens}
            per_class = {}
            for tc in s.classes:
                recs = [r for r in res.records if r.tag == tc.name]
                per_class[tc.name] = {
                    "num_requests": len(recs),
                    **latencies(recs),
                    "slo_attainment": sum(tc.slo.met(r.ttft, r.tpot, r.e2e) for r in recs) / len(recs) if recs else 0.0,
                }
            points.append(SweepPoint(c.name, c.tp, c.pp, c.replicas, rate, summary, per_class,
                                     c.disagg.model_dump() if c.disagg else None))
    return points
