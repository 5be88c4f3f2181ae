"""Report rendering from a run folder, and the comparison page."""

import json
import random
import shutil
from pathlib import Path

import pytest
import yaml

from controllers import runfolder as rf
from controllers.policies import Decision
from controllers.report import RunFolderError, compare_runs, render_report
from controllers.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]


def make_run(folder: Path, seed: int = 0) -> Path:
    """A small but complete run folder: chat is fast on tp8, summarize keeps its SLO only on pp8."""
    folder.mkdir(parents=True)
    s = load_scenario(ROOT / "scenarios/demo.yaml").scenario
    (folder / rf.SCENARIO_YAML).write_text(yaml.safe_dump(s.model_dump(mode="json")))
    rnd = random.Random(seed)
    rows = []
    t = 1000.0
    for rate in (1.0, 2.0):
        for i in range(60):
            cls = "chat" if i % 2 else "summarize"
            cfg = ["tp8", "tp4pp2", "pp8"][i % 3]
            fast = (cls == "chat") == (cfg == "tp8") or cfg == "tp4pp2"
            ttft = rnd.uniform(0.05, 0.3) if fast else rnd.uniform(0.5, 3.0)
            rows.append({"config": cfg, "sla_class": cls, "status": "ok" if i != 7 else "error",
                         "slo_met": fast and i != 7, "ttft_s": ttft, "tpot_s": rnd.uniform(0.01, 0.05),
                         "e2e_s": ttft + 3, "output_tokens": 100, "start_s": t + i * 0.5, "offered_rate": rate})
        t += 30
    (folder / rf.RECORDS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for k in range(10):
        w = {"tp8": 0.9, "tp4pp2": 0.05, "pp8": 0.05} if k > 3 else {"tp8": 1 / 3, "tp4pp2": 1 / 3, "pp8": 1 / 3}
        flipped = {"tp8": w["pp8"], "tp4pp2": w["tp4pp2"], "pp8": w["tp8"]}
        rf.append_weights(folder, 1000.0 + 6 * k, {"chat": w, "summarize": flipped}, stale=k == 2)
    rf.append_decision(folder, Decision(1024.0, "chat", "best-per-class", {"tp8": 0.9, "tp4pp2": 0.05, "pp8": 0.05},
                                        {}, "tp8", "first choice: tp8 (attainment 100%)"))
    (folder / rf.WHATIF_JSON).write_text(json.dumps({
        "note": "test prediction",
        "predictions": [{"sla_class": "chat", "config": "tp8", "rate": 1.0, "attainment": 1.0, "headroom": 0.5,
                         "meets": True},
                        {"sla_class": "chat", "config": "pp8", "rate": 1.0, "attainment": 1.0, "headroom": 0.2,
                         "meets": True}],
        "cost_terms": {"prefill": {"tp8": {"gemm": 0.01, "allreduce": 0.004}, "pp8": {"gemm": 0.08, "p2p": 0.001}},
                       "decode": {"tp8": {"gemm": 0.002, "allreduce": 0.001}, "pp8": {"gemm": 0.016}}}}))
    return folder


def test_report_renders_every_figure_and_the_outcome(tmp_path: Path) -> None:
    run = make_run(tmp_path / "demo-1")
    page = render_report(run).read_text()
    for png in ("latency_throughput", "slo_vs_rate", "latency_cdf", "cost_terms", "routing_weights"):
        assert (run / f"{png}.png").stat().st_size > 1000
        assert f"src='{png}.png'" in page
    assert "first choice: tp8" in page
    assert "disagree" in page      # pp8 misses chat's SLO on measurement; the prediction said it meets it
    assert "1 controller steps with stale data" in page


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
