"""Report rendering from a run folder, and the comparison page."""

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from controllers import runfolder as rf
from controllers.report import RunFolderError, compare_runs, read_run, render_report, study_comparison
from tests.fake_run import make_run


def test_report_renders_every_figure_and_the_outcome(tmp_path: Path) -> None:
    run = make_run(tmp_path / "demo-1")
    page = render_report(run).read_text()
    for png in ("latency_throughput", "slo_vs_rate", "latency_cdf", "cost_terms", "routing_weights"):
        assert (run / f"{png}.png").stat().st_size > 1000
        assert f"src='{png}.png'" in page
    assert "first choice: tp8" in page
    assert "disagree" in page      # pp8 misses chat's SLO on measurement; the prediction said it meets it
    assert "1 controller steps with stale data" in page
    assert "capacity within its SLO (req/s, engine clock): tp8 10.0, pp8 2.0" in page
    assert "As the study finds, TP gives latency: tp8 is the fastest" in page
    # the client's TTFT (÷ time_scale) is 1 / 0.8 of the server's own in every record: +25% from the path
    assert page.count("<td>+25.0% / +25.0%</td>") == 3


def test_report_of_a_run_without_records_still_renders(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    (run / rf.RECORDS_JSONL).unlink()
    page = render_report(run).read_text()
    assert "0 requests recorded" in page and "latency_cdf" not in page


def test_report_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"no scenario\.yaml"):
        render_report(tmp_path)
    with pytest.raises(RunFolderError, match="no such run folder"):
        render_report(tmp_path / "missing")


def test_compare_sets_runs_side_by_side(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    page = compare_runs([a, b], tmp_path / "cmp.html").read_text()
    assert "<th>a</th><th>b</th>" in page and page.count("att=") >= 12


@pytest.mark.parametrize(("caps", "ttfts", "verdict"), [
    ({"tp8": 10.0, "pp8": 2.0}, {"tp8": 0.05, "pp8": 0.2}, "As the study finds, TP gives latency"),
    ({"tp8": 2.0, "pp8": 10.0}, {"tp8": 0.05, "pp8": 0.2}, "As the study finds, deep PP (pp8) carries the most"),
    ({"tp8": 2.0, "tp4pp2": 10.0, "pp8": 1.0}, {"tp8": 0.05, "tp4pp2": 0.1, "pp8": 0.2},
     "The simulator disagrees with the study here"),
    ({"tp8": 10.0, "pp8": 2.0}, {"tp8": 0.3, "pp8": 0.2}, "here pp8 beats tp8"),
])
def test_study_comparison_says_where_the_simulator_agrees_with_the_study(
        tmp_path: Path, caps: dict[str, float], ttfts: dict[str, float], verdict: str) -> None:
    run = read_run(make_run(tmp_path / "r"))
    preds = [{"sla_class": "chat", "config": c, "capacity": cap, "alone": {"ttft_p90": ttfts[c]}}
             for c, cap in caps.items()]
    lines = study_comparison(replace(run, whatif={"predictions": preds}))
    assert len(lines) == 1 and verdict in lines[0]
