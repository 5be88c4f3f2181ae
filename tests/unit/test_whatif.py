"""The simulator what-if: predictions, goodput capacity and cost terms per configuration."""

import dataclasses
from pathlib import Path

import pytest

from controllers.records import Rec, load_records
from controllers.whatif import capacity, compare, cost_terms, predict, replay, whatif
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.workload import class_mix
from deployments.resolve import Resolved, load_scenario
from loadgen.records import RequestRecord, read_records
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
    out = whatif(demo, read_records(run / "records.jsonl"))
    assert out["rate_step"] == 1
    chat = [p for p in out["predictions"] if p["sla_class"] == "chat"]
    assert {p["config"] for p in chat} == {"tp8", "tp4pp2", "pp8"}
    engine = demo.scenario.engine
    assert chat[0]["alone"]["rate"] == pytest.approx(30 * engine.time_scale / demo.scenario.load.duration_s)
    assert all(p["capacity"] >= 0 and "capacity_ratio" in p for p in chat)
    # the replay compares the same requests: the chat requests each configuration answered (tp4pp2 failed two)
    assert [p["requests"] for p in chat] == [20, 18, 20]


def live_records(resolved: Resolved, slow: float = 1.0) -> list[RequestRecord]:
    """What the load generator would record from the live simulated engine (time_scale 5) serving the demo's
    mix at 6 req/s (engine clock) on each configuration, its first 3 s warm-up; `slow` stretches the measured
    latencies (an engine slower than the simulator)."""
    s = resolved.scenario
    k, t0 = s.engine.time_scale, 1.7e9
    reqs, _ = class_mix(s.classes, s.load.arrival, 6.0, 40.0, seed=3)
    out = []
    for c in s.configurations:
        res = run_offline(ReplicaFactory.for_deployment(s, c, resolved.model, resolved.gpu), reqs)
        for r in res.records:
            tpot = r.tpot * slow if r.output_len > 1 else None
            rec = RequestRecord(
                request_id=f"{c.name}-{r.request_id}", sla_class=r.tag, config=c.name, model="auto", rate_step=0,
                offered_rate=6.0 / k, warmup=r.arrival < 3.0, scheduled_time=t0 + r.arrival * k,
                send_time=t0 + r.arrival * k, ttft_s=r.ttft * slow * k, tpot_s=None if tpot is None else tpot * k,
                e2e_s=r.e2e * slow * k, prompt_tokens=r.prompt_len, planned_prompt_tokens=r.prompt_len,
                output_tokens=r.output_len, max_tokens=r.output_len, status="ok")
            out.append(rec)
    return out


def replayed(resolved: Resolved, records: list[RequestRecord]) -> list[dict]:
    s = resolved.scenario
    cells = [compare(tc, replay(resolved, c, records)) for c in s.configurations for tc in s.classes]
    return [p for p in cells if p is not None]


def test_replaying_the_requests_a_configuration_received_reproduces_the_simulated_engine(demo: Resolved) -> None:
    preds = replayed(demo, live_records(demo))
    assert len(preds) == 6
    for p in preds:
        assert p["agrees"] and p["flipped"] == 0, p
        assert p["attainment"] == pytest.approx(p["measured_attainment"])
        assert abs(p["ttft_error"]) < 1e-6 and abs(p["tpot_error"]) < 1e-6
        assert p["requests"] > 50   # warm-up requests were replayed (they loaded the engine) but not compared


def test_an_engine_slower_than_the_simulator_disagrees_where_it_matters(demo: Resolved) -> None:
    preds = replayed(demo, live_records(demo, slow=3.0))
    assert all(p["ttft_error"] == pytest.approx(-2 / 3) for p in preds)
    missed = [p for p in preds if p["measured_attainment"] < p["attainment"] - 0.3]
    assert missed and all(not p["agrees"] for p in missed)


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


def test_a_replicated_configuration_is_replayed_on_the_replica_each_request_went_to(demo: Resolved) -> None:
    s = demo.scenario
    c = s.configurations[0].model_copy(update={"name": "tp8x2", "replicas": 2})
    k, t0 = s.engine.time_scale, 1.7e9
    reqs, _ = class_mix(s.classes, s.load.arrival, 16.0, 30.0, seed=5)
    # the live router sent 3 of every 4 requests to one replica: not what least-loaded dispatch would do
    placed = [dataclasses.replace(r, replica=0 if i % 4 else 1) for i, r in enumerate(reqs)]
    live = run_offline(ReplicaFactory.for_deployment(s, c, demo.model, demo.gpu), placed, replicas=2)
    names = ("3f9a2c", "b71e04")   # Serve's replica ids
    records = [RequestRecord(
        request_id=r.request_id, sla_class=r.tag, config=c.name, model="auto", rate_step=0, offered_rate=None,
        scheduled_time=t0 + r.arrival * k, send_time=t0 + r.arrival * k, ttft_s=r.ttft * k,
        e2e_s=r.e2e * k, prompt_tokens=r.prompt_len, planned_prompt_tokens=r.prompt_len,
        output_tokens=r.output_len, max_tokens=r.output_len, status="ok", replica=names[r.replica])
        for r in live.records]
    exact = replay(demo, c, records)
    assert len(exact) == len(records)
    assert all(sim.ttft == pytest.approx(rec.ttft_s, abs=1e-6) for rec, sim in exact)   # epoch-time rounding
    # without the replica names the replay dispatches least-loaded, and the queues differ
    anonymous = replay(demo, c, [r.model_copy(update={"replica": None}) for r in records])
    assert max(abs(sim.ttft - rec.ttft_s) for rec, sim in anonymous) > 0.01   # type: ignore[operator]


def test_a_request_naming_a_replica_that_does_not_exist_is_refused(demo: Resolved) -> None:
    s = demo.scenario
    factory = ReplicaFactory.for_deployment(s, s.configurations[0], demo.model, demo.gpu)
    with pytest.raises(ValueError, match=r"replica outside 0\.\.1"):
        run_offline(factory, [RequestSpec(100, 4, 0.0, "chat", replica=2)], replicas=2)
