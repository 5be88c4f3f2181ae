"""The simulator's prediction of what the running configurations should show at the load they saw: per
(configuration, class) in a scoreboard, the p90 TTFT and TPOT of the configuration's replicas simulated at its
measured request rate and class mix (the scenario's request lengths). The repartition policy divides the
measured quantiles by these for its correction factors (controllers/correction.py). Seconds on the engine's
clock, as the scoreboard's server-side quantiles are."""

from collections.abc import Sequence

from controllers.plan.candidates import Knobs, Pool, Shape
from controllers.plan.evaluate import SCREEN, Setup, requests_for, run_at
from controllers.repartition import Predicted
from controllers.scoreboard import Scoreboard
from deployments.resolve import Resolved
from schema.deployment import ParallelConfig

TRAFFIC_S = 60.0   # seconds of traffic (engine clock) simulated per configuration, within SCREEN's bounds

def predict_at_load(resolved: Resolved, board: Scoreboard, configs: Sequence[ParallelConfig]) -> Predicted:
    """(configuration, class) -> (p90 TTFT s, p90 TPOT s) predicted at the load each configuration saw."""
    s = resolved.scenario
    knobs = Knobs(s.resolved_kv_dtype, s.engine.max_num_seqs, s.engine.max_num_batched_tokens)
    out: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for c in configs:
        rates = {cls: p.request_rate for (cfg, cls), p in board.pairs.items() if cfg == c.name and p.request_rate > 0}
        total = sum(rates.values())
        if total <= 0:
            continue
        mix = Resolved(s.with_mix({k: r / total for k, r in rates.items()}, total), resolved.model, resolved.gpu,
                       resolved.source)
        setup = Setup.of(mix, c.spread_pp_over_nodes)
        classes = tuple(tc.name for tc in setup.classes)
        rate = total * s.engine.clock_scale
        n = requests_for(rate, TRAFFIC_S, SCREEN, setup.to_judge(classes, SCREEN.misses))
        figs = run_at(setup, Pool(Shape(c.tp, c.pp), c.replicas, classes), knobs, rate, n, s.engine.seed,
                      SCREEN.warmup)
        for cls, f in figs.classes.items():
            ttft, tpot = f.ttft_ms.get("p90"), f.tpot_ms.get("p90")
            out[(c.name, cls)] = (ttft / 1e3 if ttft else None, tpot / 1e3 if tpot else None)
    return out
