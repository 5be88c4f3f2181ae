"""The offline comparison of a shifting run, on physics known in advance (8B bf16 on two H100s): a strict-TPOT
class misses on TP1 (~9 ms per token) and meets on TP2 (~6 ms); a long-prompt class with a lax E2E target meets
on two TP1 replicas. The best static deployment (two TP1 replicas for both) loses the interactive phase; the
per-phase oracle (TP2 there) does not; in the phase both serve alike, the two replays agree exactly."""

import random
from pathlib import Path

import pytest

from controllers.plan.candidates import Pool, Shape
from controllers.plan.parallel import InProcess, Runner
from controllers.shift_compare import compare_shift, ratios, read_comparison, write_comparison
from deployments.resolve import Resolved, parse_scenario
from loadgen.records import RequestRecord
from tests.unit.test_repartitioner import SCENARIO

STATIC = (Pool(Shape(1, 1), 2, ("fast", "bulk")),)


def planner(resolved: Resolved, runner: Runner) -> tuple[Pool, ...]:
    """What `parallax plan` answers here (test_plan_phase.py checks the planner itself on this physics)."""
    shares = {c.name: c.share for c in resolved.scenario.classes}
    if shares == {"bulk": 1.0}:
        return (Pool(Shape(1, 1), 2, ("bulk",)),)
    if shares == {"fast": 1.0}:
        return (Pool(Shape(2, 1), 1, ("fast",)),)
    return STATIC


def records(live_met: bool) -> list[RequestRecord]:
    """Phase batch: bulk at 2 req/s for 300 s; phase interactive: fast at 2 req/s for 300 s (Poisson)."""
    rnd = random.Random(3)
    out: list[RequestRecord] = []
    t = 1000.0
    for phase, cls, prompt in (("batch", "bulk", 4000), ("interactive", "fast", 128)):
        end = t + 300.0
        while t < end:
            out.append(RequestRecord(request_id=str(len(out)), sla_class=cls, config="x", model="auto",
                                     rate_step=0 if phase == "batch" else 1, phase=phase, offered_rate=2.0,
                                     scheduled_time=t, send_time=t, planned_prompt_tokens=prompt, prompt_tokens=prompt,
                                     output_tokens=64, max_tokens=64, status="ok", slo_met=live_met,
                                     ttft_s=0.05, tpot_s=0.005 if live_met else 0.05, e2e_s=0.4 if live_met else 100.0))
            t += rnd.expovariate(2.0)
        t = end
    return out


def test_the_static_deployment_loses_the_phase_the_oracle_wins(tmp_path: Path) -> None:
    c = compare_shift(parse_scenario(SCENARIO), records(True), InProcess(), planner)
    assert c.phases == ["batch", "interactive"] and c.durations_s == [300.0, 300.0]
    assert c.static[0] == c.oracle[0] > 1.5                 # the same shape, the same requests from an empty engine
    assert c.static[1] < 0.2 and c.oracle[1] > 1.5          # TP1 misses an 8 ms TPOT, TP2 meets it
    assert c.live == pytest.approx([n / 300.0 for n in (
        sum(1 for r in records(True) if r.phase == p) for p in ("batch", "interactive"))])   # every request met
    r = ratios(c)
    assert r["live/static"] is not None and r["live/static"] > 1.5 and r["live/oracle"] == pytest.approx(
        c.overall(c.live) / c.overall(c.oracle))
    assert c.static_deployment == "2×TP1 [fast, bulk]" and c.oracle_deployments[1] == "1×TP2 [fast]"
    write_comparison(tmp_path, c)
    assert read_comparison(tmp_path) == c


def test_a_live_run_that_missed_everything_counts_nothing() -> None:
    c = compare_shift(parse_scenario(SCENARIO), records(False), InProcess(), planner)
    assert c.live == [0.0, 0.0]


def test_a_scenario_without_phases_is_refused() -> None:
    flat = {**SCENARIO, "load": {"arrival": {"kind": "poisson", "rate": 1.0}, "duration_s": 60}}
    with pytest.raises(ValueError, match=r"load\.phases"):
        compare_shift(parse_scenario(flat), [], InProcess(), planner)
