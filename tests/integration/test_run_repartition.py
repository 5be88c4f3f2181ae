"""`parallax run` with `controller.policy: repartition` on the real stack (Ray Serve, simulated engines on 2 GPUs,
Prometheus, HTTP load in two phases): through the first phase, whose mix the running TP2 suits, the loop stays;
after the shift to the long-prompt class it moves TP2 → 2×TP1 once, through the real fleet (hold, drain, remove,
deploy, route) while the load runs; every request sent is answered; the controller follows the new set (it
routes, and the scoreboard measures, the configuration the loop added); repartition.jsonl has the decision with
its reason, the predicted gain, the steps, the transition and the realised gain; the report has the section.
The same on real vLLM (the CPU build, the tiny model; marker `vllm`): nothing lost, nothing left running.

The re-plan is the one stand-in: what the planner answers for each mix is given (`Physics`: TP2 for a mix mostly
of the strict-TPOT class, 2×TP1 otherwise, as the simulator says for an 8B model on H100s), because the real
`replan` takes minutes per re-plan on a busy 2-core machine; everything it feeds (valuation, dwell, transition
planning, execution, logging, routing) is the real code."""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from controllers import run as run_module
from controllers.controller import Controller
from controllers.plan.candidates import Pool, Shape
from controllers.plan.parallel import Runner
from controllers.plan.replan import Replan
from controllers.repartition_log import DecisionLine, Line, RealisedLine, StepLine, TransitionLine, read_lines
from controllers.repartitioner import for_run
from controllers.run import run_scenario
from controllers.scoreboard import Scoreboard
from controllers.shift_compare import read_comparison
from deployments.resolve import Resolved, parse_scenario
from loadgen.records import RequestRecord, read_records
from tests.support.vllm_tier import TINY_MODEL, Residue, set_cache_env

pytestmark = pytest.mark.integration

CLASSES = ("fast", "bulk")
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
        {"name": "interactive", "duration_s": 30, "rate": 2, "shares": {"fast": 1.0}},
        {"name": "batch", "duration_s": 90, "rate": 2, "shares": {"bulk": 1.0}}]},
    "controller": {"policy": "repartition", "interval_s": 1, "window_s": 8, "min_samples": 3,
                   "repartition": {"interval_s": 3, "min_dwell_s": 6, "plan_budget_s": 3,
                                   "forecast": {"kind": "ewma", "alpha": 0.9, "horizon_s": 300}}},
}
TP2 = (Pool(Shape(2, 1), 1, CLASSES),)
TWO_TP1 = (Pool(Shape(1, 1), 2, CLASSES),)



def physics(resolved: Resolved, current: Sequence[Pool], factors: Mapping[tuple[int, int], tuple[float, float]],
            budget_s: float, runner: Runner) -> Replan:
    """TP2 for a mix mostly of `fast`, 2×TP1 otherwise; the right split serves the whole rate, the other half."""
    s = resolved.scenario
    shares = {c.name: c.share for c in s.classes}
    rate = float(getattr(s.load.arrival, "rate", 0.0))
    best = TP2 if shares.get("fast", 0.0) > 0.5 else TWO_TP1
    return Replan(best, rate, rate if sorted(current) == sorted(best) else rate / 2, rate,
                  elapsed_s=0.0, evaluated=2, why="given")


@dataclass(frozen=True)
class Moved:
    records: list[RequestRecord]
    lines: list[Line]
    move: DecisionLine
    transition: TransitionLine
    report: Path
    controller: Controller
    boards: list[Scoreboard]           # every scoreboard the controller read, in order


def run_and_check_one_move(scenario: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Moved:
    """`scenario` run with the given re-plans: it stays through the first phase, moves TP2 → 2×TP1 once after
    the shift and reaches it, every request is answered, and the controller routes to the configuration added."""
    monkeypatch.setattr(run_module, "for_run", partial(for_run, replanner=physics))
    boards: list[Scoreboard] = []
    read = Controller.read

    def reading(self: Controller, now: float) -> Scoreboard:
        boards.append(read(self, now))
        return boards[-1]
    monkeypatch.setattr(Controller, "read", reading)
    src = tmp_path / "s.yaml"
    src.write_text(yaml.safe_dump(scenario))
    resolved = parse_scenario(scenario, str(src), tmp_path)
    seen: list[Controller] = []
    with open(os.devnull, "w") as quiet:
        result = run_scenario(resolved, tmp_path / "runs", Console(file=quiet), live=False,
                              on_started=seen.append)
    assert result.error is None, result.error
    records = read_records(result.folder)
    planned = sum(p["rate"] * p["duration_s"] for p in scenario["load"]["phases"])
    assert len(records) >= planned * 0.6   # the load ran (Poisson)
    bad = [(r.request_id, r.phase, r.status, r.error) for r in records if r.status != "ok"]
    assert not bad, bad[:5]

    lines = read_lines(result.folder)
    decisions = [x for x in lines if isinstance(x, DecisionLine)]
    moves = [d for d in decisions if d.outcome == "move"]
    assert len(moves) == 1, [(d.time, d.outcome, d.reason) for d in decisions]
    move = moves[0]
    shift = min(r.scheduled_time for r in records if r.phase == scenario["load"]["phases"][1]["name"])
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

    # the controller follows the set the loop made: it knows only the new configuration, and routes to it
    (controller,) = seen
    (new,) = controller.configs
    assert new != "tp2"
    after = [r for r in records if r.send_time is not None and r.send_time > transition.time]
    assert after and {r.config for r in after} == {new}
    assert result.report is not None
    return Moved(records, lines, move, transition, result.report, controller, boards)


def test_the_loop_moves_once_after_the_shift_and_loses_nothing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    moved = run_and_check_one_move(SCENARIO, tmp_path, monkeypatch)
    realised = [x for x in moved.lines if isinstance(x, RealisedLine)]
    assert [x.decision for x in realised] == [moved.move.decision]
    assert realised[0].realised_gain is not None
    assert "<h2>Re-partitioning</h2>" in moved.report.read_text()
    (new,) = moved.controller.configs
    # the recording rules cover the new label (read while the load ran: the last read may come after it ended)
    assert any(b.pair(new, "bulk").request_rate > 0 for b in moved.boards)
    # the run replayed its own requests on the best static split and the per-phase oracle, for the report
    c = read_comparison(moved.report.parent)
    assert c is not None and c.phases == ["interactive", "batch"]
    assert c.oracle_deployments[1] == "2×TP1 [bulk]" and len(c.live) == len(c.static) == len(c.oracle) == 2
    assert all(g > 0 for g in c.live + c.static + c.oracle)
    assert c.static_deployment in moved.report.read_text()


VLLM_SCENARIO = {
    "name": "repartition-vllm", "model": str(TINY_MODEL), "dtype": "fp32",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1},   # logical GPUs: the CPU build's ranks
    "engine": {"kind": "vllm", "model_path": str(TINY_MODEL), "max_num_seqs": 32, "max_num_batched_tokens": 2048,
               "max_model_len": 2048, "block_size": 32, "stream_interval_ms": 20},
    "configurations": [{"name": "tp2", "tp": 2}],
    "server": {"port": 0, "hold_queue_size": 512, "hold_max_wait_s": 600},
    "classes": [
        {"name": "fast", "share": 0.5, "slo": {"ttft_ms": 500, "tpot_ms": 50, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 64}, "output": {"kind": "fixed", "value": 16}},
        {"name": "bulk", "share": 0.5, "slo": {"e2e_ms": 60000, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 512}, "output": {"kind": "fixed", "value": 16}}],
    "load": {"arrival": {"kind": "poisson"}, "timeout_s": 600, "phases": [
        {"name": "interactive", "duration_s": 40, "rate": 1, "shares": {"fast": 1.0}},
        {"name": "batch", "duration_s": 240, "rate": 1, "shares": {"bulk": 1.0}}]},
    "controller": {"policy": "repartition", "interval_s": 2, "window_s": 10, "min_samples": 3,
                   "repartition": {"interval_s": 4, "min_dwell_s": 8, "plan_budget_s": 4,
                                   "forecast": {"kind": "ewma", "alpha": 0.9, "horizon_s": 1800},
                                   # the offline references are simulated H100s; this run's GPUs are CPU ranks
                                   "compare_offline": False}},
}


@pytest.mark.vllm
@pytest.mark.slow   # ~7 min on 2 cores (two vLLM starts and a 240 s load): `make test-slow`, outside CI's time
def test_real_vllm_moves_tp2_to_two_tp1_under_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on the CPU build of vLLM with the tiny model: the move's new engines really start (the start
    the fleet measured prices later moves), nothing is lost, no vLLM process or file is left."""
    assert (TINY_MODEL / "config.json").exists(), f"no tiny model in {TINY_MODEL}: run `make setup` first"
    set_cache_env()
    before = Residue.now()
    moved = run_and_check_one_move(VLLM_SCENARIO, tmp_path, monkeypatch)
    deploys = [x for x in moved.lines if isinstance(x, StepLine) and x.line.startswith("deploy ")]
    assert deploys and all(d.seconds > 0 for d in deploys)
    left = Residue.now().new_since(before)
    assert not left.files and not left.processes, left
