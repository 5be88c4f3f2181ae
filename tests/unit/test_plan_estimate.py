"""The steady-state estimate of a pool's capacity (controllers/plan/estimate.py) against the simulator: on shapes ×
workloads of the shipped planning questions, the simulated capacity lies within the estimate's error bar, and
pools whose error bars do not overlap the simulator ranks as the estimate does (what the screen relies on). The
residuals are printed (`pytest -s`)."""

import math
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import pytest

from controllers.plan.candidates import Knobs, Pool, Shape
from controllers.plan.estimate import LOW, estimate, lengths
from controllers.plan.evaluate import SCREEN, Setup, capacity
from deployments.resolve import Resolved, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHAPES = (Shape(8, 1), Shape(4, 1), Shape(2, 1), Shape(2, 2), Shape(4, 2))
# (scenario, phase or None, class group or None for all its classes)
WORKLOADS = [("plan-70b-h200.yaml", None, None), ("plan-70b-h100-2k200.yaml", None, None),
             ("shift.yaml", 1, ("chat",)), ("shift.yaml", 1, ("summarize",))]


def resolved(name: str, phase: int | None) -> Resolved:
    r = load_scenario(SCENARIOS / name, need_configurations=False)
    return r if phase is None else replace(r, scenario=r.scenario.phase_mix(phase))


@pytest.mark.parametrize(("name", "phase", "group"), WORKLOADS)
def test_simulated_capacity_lies_within_the_estimates_error_bar(name: str, phase: int | None,
                                                                group: tuple[str, ...] | None) -> None:
    r = resolved(name, phase)
    s = r.scenario
    setup = Setup.of(r, False)
    knobs = Knobs(s.resolved_kv_dtype, s.engine.max_num_seqs, s.engine.max_num_batched_tokens)
    names = group or tuple(c.name for c in s.classes)
    lens = lengths(setup, names, s.engine.seed)
    pairs = []
    for shape in SHAPES:
        pool = Pool(shape, 1, names)
        est = estimate(setup, pool, knobs, lens)
        sim = capacity(setup, pool, knobs, SCREEN, s.engine.seed)
        residual = math.log(sim.rate / est.rate) if sim.rate > 0 and est.rate > 0 else math.nan
        print(f"{name} {'+'.join(names)} {shape.label}: estimate {est.rate:.3f} ({est.binding}), simulated "
              f"{sim.rate:.3f} ({sim.binding}), log residual {residual:+.3f} (bar −{LOW:.2f} +{est.high:.2f})")
        pairs.append((est, sim.rate))
        assert (est.rate == 0) == (sim.rate == 0)
        if sim.rate > 0:
            assert est.lower <= sim.rate <= est.upper
    for (e1, s1), (e2, s2) in combinations(pairs, 2):
        if e1.lower > e2.upper or e2.lower > e1.upper:
            assert (e1.rate > e2.rate) == (s1 > s2)
