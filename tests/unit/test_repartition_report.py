"""The report's Re-partitioning section from a run folder's repartition.jsonl: each move with its predicted and
realised gain and its transition's outcome, the steps (rollbacks marked), every decision folded, the timeline."""

from pathlib import Path

from typer.testing import CliRunner

from controllers.cli.app import app
from controllers.records import load_records
from controllers.repartition_log import DecisionLine, RealisedLine, StepLine, TransitionLine, append_line, read_lines
from controllers.repartition_report import timeline_series
from controllers.report import read_run, render_report
from controllers.shift_compare import ShiftComparison, write_comparison
from tests.fake_run import make_run


def write_lines(folder: Path, t0: float) -> None:
    common = {"current": ["1×TP8 [chat, pp]"], "shares": {"chat": 0.2, "pp": 0.8}, "rate": 5.0}
    append_line(folder, DecisionLine(time=t0 + 10, decision=1, outcome="stay", reason="stay: predicted gain +20.0% "
                                     "held 0 s of min_dwell_s 60 s", predicted_gain=0.2, gpus={"TP8": 8}, **common))
    append_line(folder, DecisionLine(time=t0 + 70, decision=2, outcome="move", reason="move: gain +21.0% ≥ min_gain",
                                     best=["1×TP4 [chat]", "1×PP4 [pp]"], predicted_gain=0.21, stay_goodput=4.0,
                                     best_goodput=5.0, cost=20.0, gpus={"TP8": 8}, **common))
    append_line(folder, StepLine(time=t0 + 75, decision=2, line="drain tp8: held while it empties", seconds=5.0))
    append_line(folder, StepLine(time=t0 + 76, decision=2, line="deploy pp4 (1×PP4): new", seconds=0.0,
                                 error="FleetError: timed out"))
    append_line(folder, StepLine(time=t0 + 90, decision=2, line="deploy tp8-2 (1×TP8): back", seconds=14.0,
                                 rollback=True))
    append_line(folder, TransitionLine(time=t0 + 90, decision=2, reached=False, reason="deploy pp4 (1×PP4) failed "
                                       "(FleetError: timed out); rolled back to the last working split in 2 steps",
                                       seconds=20.0, gpus={"TP8": 8}))
    append_line(folder, RealisedLine(time=t0 + 130, decision=2, measured_goodput=4.4, stay_goodput=4.0,
                                     realised_gain=0.1))


def test_the_section_shows_moves_gains_steps_and_the_timeline(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "r")
    run = read_run(folder)
    t0 = min(r.start_s for r in run.records) * run.scenario.engine.clock_scale
    write_lines(folder, t0)
    assert [type(x).__name__ for x in read_lines(folder)] == ["DecisionLine", "DecisionLine", "StepLine", "StepLine",
                                                             "StepLine", "TransitionLine", "RealisedLine"]
    page = render_report(folder).read_text()
    assert "<h2>Re-partitioning</h2>" in page and "2 decisions, 1 moves" in page
    assert "1×TP8 [chat, pp] → 1×TP4 [chat] + 1×PP4 [pp]" in page
    assert "<td>+21.0%</td><td>+10.0%</td>" in page                  # predicted, realised
    assert "rolled back in 20 s" in page and "rollback: deploy tp8-2" in page and "FleetError: timed out" in page
    assert (folder / "repartition_timeline.png").stat().st_size > 5000


def test_a_run_without_repartition_has_no_section(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "r")
    assert "Re-partitioning" not in render_report(folder).read_text()


def test_the_timeline_bins_arrivals_and_attainment_by_send_time(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "r")
    run = read_run(folder)
    k = run.scenario.engine.clock_scale
    records = load_records(folder / "records.jsonl", k, {c.name: c.slo for c in run.scenario.classes})
    t0 = min(r.start_s for r in records) * k
    times, rates, att = timeline_series(records, ["chat"], k, t0, 10.0)
    assert times[:2] == [0.0, 10.0]
    chat = [r for r in records if r.sla_class == "chat"]
    assert sum(rates["chat"]) * 10.0 == len(chat)
    first = [r for r in chat if r.start_s * k - t0 < 10.0]
    assert att["chat"][0] == (sum(r.slo_met for r in first) / len(first) if first else None)


def test_the_offline_references_stand_beside_the_live_result(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "r")
    write_comparison(folder, ShiftComparison(["day", "night"], [900.0, 900.0], [5.0, 4.0], [5.0, 2.0], [5.5, 4.5],
                                             "1×TP8 [chat, summarize]", ["1×TP8 [chat, summarize]", "2×PP4 [..]"]))
    page = render_report(folder).read_text()
    assert "Against the offline references" in page
    assert "<td class=l>best static</td><td>5.00</td><td>2.00</td><td><b>3.50</b></td>" in page
    assert "live/static 1.29, live/oracle 0.90" in page


def test_compare_shift_refuses_a_run_without_phases(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "r")
    res = CliRunner().invoke(app, ["compare-shift", str(folder)])
    assert res.exit_code != 0 and "load.phases" in res.output and "Traceback" not in res.output
