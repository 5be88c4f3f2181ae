"""The simulator what-if: predictions, goodput capacity and cost terms per configuration."""

from pathlib import Path

import pytest

from controllers.records import Rec, load_records
from controllers.scenario import Resolved, load_scenario
from controllers.whatif import capacity, cost_terms, predict, whatif
from tests.fake_run import make_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo() -> Resolved:
    return load_scenario(ROOT / "scenarios/demo.yaml")


def test_cost_terms_show_allreduce_under_tp_and_transfers_under_pp(demo: Resolved) -> None:
    terms = cost_terms(demo, isl=4096, context=2000)
    assert terms["prefill"]["tp8"]["allreduce"] > 0 and terms["prefill"]["tp8"]["p2p"] == 0
    assert terms["prefill"]["pp8"]["allreduce"] == 0 and terms["prefill"]["pp8"]["p2p"] > 0
    # one PP8 pass runs every layer on one GPU per stage: the single-pass latency is the longest
    assert sum(terms["decode"]["pp8"].values()) > sum(terms["decode"]["tp8"].values())


def test_prediction_and_capacity_bracket_the_slo(demo: Resolved) -> None:
    s = demo.scenario
    tc = s.class_named("summarize")
    tp8 = s.configurations[0]
    lengths = [(4096, 208)]
    low = predict(demo, tp8, tc, 0.5, lengths, 30)
    assert low["meets"] and low["ttft_p90"] < tc.slo.ttft_ms / 1000 and low["headroom"] > 0
    cap = capacity(demo, tp8, tc, lengths, 30, steps=3)
    assert cap > 0.5
    assert not predict(demo, tp8, tc, cap * 3, lengths, 30)["meets"]


def test_whatif_predicts_at_the_observed_rate_of_the_last_step(demo: Resolved, tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    recs = load_records(run / "records.jsonl")
    out = whatif(demo, recs)
    assert out["rate_step"] == 1
    chat = [p for p in out["predictions"] if p["sla_class"] == "chat"]
    assert {p["config"] for p in chat} == {"tp8", "tp4pp2", "pp8"}
    engine = demo.scenario.engine
    assert chat[0]["rate"] == pytest.approx(30 * engine.time_scale / demo.scenario.load.duration_s)
    assert all(p["capacity"] >= 0 and "capacity_ratio" in p for p in chat)


def test_records_convert_to_the_engine_clock_and_are_rejudged(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    slos = {c.name: c.slo for c in load_scenario(ROOT / "scenarios/demo.yaml").scenario.classes}
    wall = load_records(run / "records.jsonl")
    eng = load_records(run / "records.jsonl", time_scale=4.0, slos=slos)
    a, b = wall[0], eng[0]
    assert isinstance(b, Rec) and b.ttft_s == pytest.approx(a.ttft_s / 4) and b.offered_rate == a.offered_rate * 4
    assert sum(r.slo_met for r in eng) > sum(r.slo_met for r in wall)   # 4× faster: more meet the SLO


def test_a_class_a_configuration_cannot_hold_is_predicted_to_fail(demo: Resolved) -> None:
    s = demo.scenario
    tiny = demo.scenario.model_copy(update={"engine": s.engine.model_copy(update={"max_model_len": 2048})})
    r = Resolved(tiny, demo.model, demo.gpu, demo.source)
    p = predict(r, s.configurations[0], s.class_named("summarize"), 1.0, [(4096, 208)], 30)
    assert not p["meets"] and p["attainment"] == 0.0 and "exceed" in p["error"]
    assert capacity(r, s.configurations[0], s.class_named("summarize"), [(4096, 208)], 30) == 0.0
