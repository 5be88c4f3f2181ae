"""`parallax run` with `controller.policy: repartition` on the real stack (Ray Serve, simulated engines on 2 GPUs,
Prometheus, HTTP load in two phases): through the first phase, whose mix the running TP2 suits, the loop stays;
after the shift to the long-prompt class it moves TP2 → 2×TP1 once, through the real fleet (hold, drain, remove,
deploy, route) while the load runs; every request sent is answered; the controller follows the new set (it
routes, and the scoreboard measures, the configuration the loop added); repartition.jsonl has the decision with
its reason, the predicted gain, the steps, the transition and the realised gain; the report has the section.

The re-plan is the one stand-in: what the planner answers for each mix is given (`Physics`: TP2 for a mix mostly
of the strict-TPOT class, 2×TP1 otherwise, as the simulator says for an 8B model on H100s), because the real
`replan` takes minutes per re-plan on a busy 2-core machine; everything it feeds (valuation, dwell, transition
planning, execution, logging, routing) is the real code."""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from controllers import run as run_module
from controllers.controller import Controller
from controllers.plan.candidates import Pool, Shape
from controllers.plan.parallel import Runner
from controllers.repartition_log import DecisionLine, RealisedLine, StepLine, TransitionLine, read_lines
from controllers.repartitioner import for_run
from controllers.run import run_scenario
from deployments.resolve import Resolved, parse_scenario
from loadgen.records import read_records

pytestmark = pytest.mark.integration

CLASSES = ("fast", "bulk")
FIRST_S, SECOND_S = 30.0, 90.0
SCENARIO = {
    "name": "repartition-live", "model": "llama-3.1-8b", "dtype": "bf16",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1},
    "engine": {"kind": "sim", "max_model_len": 4096, "startup_s": 1.0},
    "configurations": [{"name": "tp2", "tp": 2}],
    "server": {"port": 0, "hold_queue_size": 512, "hold_max_wait_s": 120},
    "classes": [
        {"name": "fast", "share": 0.5, "slo": {"ttft_ms": 500, "tpot_ms": 20, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 128}, "output": {"kind": "fixed", "value": 16}},
        {"name": "bulk", "share": 0.5, "slo": {"e2e_ms": 60000, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 2000}, "output": {"kind": "fixed", "value": 16}}],
    "load": {"arrival": {"kind": "poisson"}, "phases": [
        {"name": "interactive", "duration_s": FIRST_S, "rate": 2, "shares": {"fast": 1.0}},
        {"name": "batch", "duration_s": SECOND_S, "rate": 2, "shares": {"bulk": 1.0}}]},
    "controller": {"policy": "repartition", "interval_s": 1, "window_s": 8, "min_samples": 3,
                   "repartition": {"interval_s": 3, "min_dwell_s": 6, "plan_budget_s": 3,
                                   "forecast": {"kind": "ewma", "alpha": 0.9, "horizon_s": 300}}},
}
TP2 = (Pool(Shape(2, 1), 1, CLASSES),)
TWO_TP1 = (Pool(Shape(1, 1), 2, CLASSES),)


@dataclass(frozen=True)
class Answer:
    best: tuple[Pool, ...]
    best_goodput: float
    current_goodput: float
    rate: float
    elapsed_s: float = 0.0
    evaluated: int = 2
    why: str = "given"


def physics(resolved: Resolved, current: Sequence[Pool], factors: Mapping[tuple[int, int], tuple[float, float]],
            budget_s: float, runner: Runner) -> Answer:
    """TP2 for a mix mostly of `fast`, 2×TP1 otherwise; the right split serves the whole rate, the other half."""
    s = resolved.scenario
    shares = {c.name: c.share for c in s.classes}
    rate = float(getattr(s.load.arrival, "rate", 0.0))
    best = TP2 if shares.get("fast", 0.0) > 0.5 else TWO_TP1
    return Answer(best, rate, rate if sorted(current) == sorted(best) else rate / 2, rate)


def test_the_loop_moves_once_after_the_shift_and_loses_nothing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "for_run", partial(for_run, replanner=physics))
    src = tmp_path / "s.yaml"
    src.write_text(yaml.safe_dump(SCENARIO))
    resolved = parse_scenario(SCENARIO, str(src), tmp_path)
    seen: list[Controller] = []
    with open(os.devnull, "w") as quiet:
        result = run_scenario(resolved, tmp_path / "runs", Console(file=quiet), live=False,
                              on_started=seen.append)
    assert result.error is None, result.error
    folder = result.folder

    records = read_records(folder)
    assert len(records) >= 2 * (FIRST_S + SECOND_S) * 0.6   # the load ran (Poisson at 2 req/s)
    bad = [(r.request_id, r.phase, r.status, r.error) for r in records if r.status != "ok"]
    assert not bad, bad[:5]

    lines = read_lines(folder)
    decisions = [x for x in lines if isinstance(x, DecisionLine)]
    moves = [d for d in decisions if d.outcome == "move"]
    assert len(moves) == 1, [(d.time, d.outcome, d.reason) for d in decisions]
    move = moves[0]
    shift = min(r.scheduled_time for r in records if r.phase == "batch")
    assert move.time > shift, "moved during the first phase, whose mix the running TP2 suits"
    assert all(d.outcome == "stay" for d in decisions if d.time < shift)
    assert any(d.time < shift for d in decisions)   # the first phase was re-planned, and stayed
    assert move.current == ["1×TP2 [fast, bulk]"] and move.best == ["2×TP1 [fast, bulk]"]
    assert move.reason and move.predicted_gain is not None and move.predicted_gain >= 0.15

    steps = [x for x in lines if isinstance(x, StepLine) and x.decision == move.decision]
    assert steps and all(s.error is None and not s.rollback for s in steps), steps
    (transition,) = [x for x in lines if isinstance(x, TransitionLine)]
    assert transition.reached, transition.reason
    assert transition.gpus == {"TP1": 2}
    realised = [x for x in lines if isinstance(x, RealisedLine)]
    assert [x.decision for x in realised] == [move.decision]
    assert realised[0].realised_gain is not None

    # the controller follows the set the loop made: it knows only the new configuration, and it served
    (controller,) = seen
    (new,) = controller.configs
    assert new != "tp2"
    after = [r for r in records if r.send_time is not None and r.send_time > transition.time]
    assert after and {r.config for r in after} == {new}
    assert controller.board.pair(new, "bulk").request_rate > 0   # the recording rules cover the new label

    assert result.report is not None
    assert "<h2>Re-partitioning</h2>" in result.report.read_text()
