"""What a plan hands on: the `--json` contract, plan.json, the written scenario (plan section, routing, load
ladder), the plan-vs-live comparison and its report section, and the CLI's clear errors."""

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controllers import runfolder as rf
from controllers.cli.app import app
from controllers.controller import Controller
from controllers.plan.live import compare, met_at_server
from controllers.plan.proposal import ladder
from controllers.records import Rec
from controllers.report import render_report
from deployments.resolve import load_scenario, parse_scenario
from loadgen.records import RequestRecord, write_records
from schema.plan import PlanSection
from schema.scenario import ScenarioError

CLASS = {"name": "x", "share": 1.0, "slo": {"ttft_ms": 1500, "tpot_ms": 60, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 2000}, "output": {"kind": "fixed", "value": 32}}
SMALL: dict[str, Any] = {"name": "small", "model": "llama-3.1-70b", "dtype": "fp8",
                         "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4},
                         "engine": {"kind": "sim", "time_scale": 2}, "classes": [CLASS],
                         "load": {"arrival": {"kind": "poisson", "rate": 1.0}, "rates": [1.0, 2.0], "duration_s": 30}}

PLAN = {"objective": "max-rate", "deployments": [
    {"rank": 1, "label": "1×TP4 [a] + 2×TP2 [b]", "gpus": 8, "max_rate": 10.0,
     "pools": [{"config": "p1a", "classes": ["a"]}, {"config": "p1b", "classes": ["b"]}]},
    {"rank": 2, "label": "2×TP4", "gpus": 8, "max_rate": 5.0, "pools": [{"config": "p2", "classes": ["a", "b"]}]}]}


def two_class_scenario(**changes: Any) -> dict[str, Any]:
    cls_b = {**CLASS, "name": "b", "share": 0.5}
    data = {**SMALL, "hardware": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2},
            "classes": [{**CLASS, "name": "a", "share": 0.5}, cls_b],
            "configurations": [{"name": "p1a", "tp": 4}, {"name": "p1b", "tp": 2, "replicas": 2},
                               {"name": "p2", "tp": 4, "replicas": 2}],
            "controller": {"policy": "observe"}, "plan": copy.deepcopy(PLAN)}
    data.update(changes)
    return data


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path, Path]:
    d = tmp_path_factory.mktemp("plan")
    src = d / "small.yaml"
    src.write_text(yaml.safe_dump(SMALL))
    written = d / "top.yaml"
    res = CliRunner().invoke(app, ["plan", str(src), "--json", "--top", "2", "--write-scenario", str(written),
                                   "--out", str(d / "runs"), "--seeds", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    return out, written, next((d / "runs").glob("plan-small-*"))


def groups(pool: dict[str, Any]) -> list[dict[str, int]]:
    """A `--json` pool's replica groups: itself (aggregated), or its prefill and decode roles."""
    return [pool["prefill"], pool["decode"]] if "prefill" in pool else [pool]


def test_json_is_the_contract_best_first(planned: tuple[list[dict[str, Any]], Path, Path]) -> None:
    out, _, _ = planned
    assert 1 <= len(out) <= 2
    for e in out:
        assert {"deployment", "gpus", "max_rate", "goodput_per_gpu", "output_tokens_per_s_per_gpu", "classes"} <= set(e)
        assert e["kind"] in ("aggregated", "disaggregated")
        assert all("classes" in p for p in e["deployment"])
        assert e["gpus"] == sum(g["tp"] * g["pp"] * g["replicas"] for p in e["deployment"] for g in groups(p)) <= 4
        c = e["classes"]["x"]
        assert set(c["ttft_ms"]) == {"p50", "p90"} and set(c["tpot_ms"]) == {"p50", "p90"}
        assert c["attainment"] >= 0.9 and c["ttft_ms"]["p90"] <= 1500 and c["tpot_ms"]["p90"] <= 60
        assert e["goodput_per_gpu"] <= e["max_rate"] / e["gpus"] + 1e-9
    assert out == sorted(out, key=lambda e: -e["max_rate"])


def test_plan_json_and_figure_are_written(planned: tuple[list[dict[str, Any]], Path, Path]) -> None:
    out, _, folder = planned
    doc = json.loads((folder / "plan.json").read_text())
    assert doc["ranked"][:len(out)] == out and len(doc["screened"]) > len(out)
    assert doc["candidates"] == len(doc["screened"]) + len(doc["screened_out"])
    best = doc["screened"][0]["max_rate"]
    assert all(e["upper"] < best for e in doc["screened_out"])     # ruled out: could not have won
    assert doc["objective"] == "max-rate" and doc["gpus"] == 4 and doc["seeds"] == 2
    assert (folder / "pareto.png").stat().st_size > 1000


def test_written_scenario_deploys_the_top_k_side_by_side(planned: tuple[list[dict[str, Any]], Path, Path]) -> None:
    out, written, _ = planned
    r = load_scenario(written)
    s = r.scenario
    assert s.plan is not None and [d.rank for d in s.plan.deployments] == list(range(1, len(out) + 1))
    for d, e in zip(s.plan.deployments, out, strict=True):
        assert d.max_rate == pytest.approx(e["max_rate"])
        shapes = sorted((g.tp, g.pp, g.replicas) for c in s.configurations if c.name in d.configs for g in c.groups)
        assert shapes == sorted((g["tp"], g["pp"], g["replicas"]) for p in e["deployment"] for g in groups(p))
    assert s.hardware.total_gpus >= sum(c.gpus for c in s.configurations)
    assert s.controller.policy == "observe" and s.classes == parse_scenario(SMALL, need_configurations=False
                                                                            ).scenario.classes
    units = len(s.plan.deployments)
    per_deployment = [x * s.engine.time_scale / units for x in s.load.rates]
    assert per_deployment == pytest.approx(ladder(s.plan), rel=1e-3)
    res = CliRunner().invoke(app, ["validate", str(written)])
    assert res.exit_code == 0, res.output


def test_the_ladder_separates_the_predicted_capacities() -> None:
    section = PlanSection.model_validate(PLAN)
    rungs = ladder(section)
    assert len(rungs) == 2 and rungs[0] < 5.0 < rungs[1] < 10.0
    one = PlanSection.model_validate({**PLAN, "deployments": PLAN["deployments"][:1]})
    low, high = ladder(one)
    assert low < 10.0 < high                            # a single deployment is bracketed
    per_gpu = PlanSection.model_validate({**PLAN, "split": "per-gpu"})
    assert ladder(per_gpu) == pytest.approx([r / 8 for r in rungs])


def test_plan_routes_each_class_to_its_pool_in_every_deployment() -> None:
    r = parse_scenario(two_class_scenario())
    assert r.scenario.plan is not None
    w = r.scenario.plan.weights(["a", "b"])
    assert w == {"a": {"p1a": 0.5, "p2": 0.5}, "b": {"p1b": 0.5, "p2": 0.5}}
    c = Controller(r.scenario, query=lambda _: [], router=None)  # type: ignore[arg-type]
    assert c.state.weights == w


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"controller": {"policy": "best-per-class"}}, "controller.policy", "set policy: observe"),
    ({"plan": {**PLAN, "deployments": [{**PLAN["deployments"][0], "pools": [
        {"config": "p1a", "classes": ["a"]}, {"config": "nope", "classes": ["b"]}]}]}},
     "plan.deployments[0].pools[1].config", "'nope' is not a configuration"),
    ({"plan": {**PLAN, "deployments": [{**PLAN["deployments"][0], "pools": [
        {"config": "p1a", "classes": ["a", "b"]}, {"config": "p1b", "classes": ["b"]}]}]}},
     "plan.deployments[0].pools", "class 'b' is routed to 2 pools"),
])
def test_a_plan_section_is_checked(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(two_class_scenario(**change), "s.yaml")
    assert any(f == field and words in msg for f, msg in e.value.problems), e.value.problems


def rec(config: str, cls: str, step: int, met: bool) -> Rec:
    return Rec(config=config, sla_class=cls, ok=True, slo_met=met, ttft_s=0.1, tpot_s=0.01, e2e_s=1.0,
               prompt_tokens=10, output_tokens=10, start_s=float(step), rate_step=step, offered_rate=1.0)


def live_records(p1_misses_from: int, p2_misses_from: int, steps: int = 3) -> list[Rec]:
    out = []
    for j in range(steps):
        for i in range(20):
            out += [rec("p1a", "a", j, j < p1_misses_from or i % 5 == 0), rec("p1b", "b", j, True),
                    rec("p2", "a", j, j < p2_misses_from), rec("p2", "b", j, j < p2_misses_from)]
    return out


def test_live_ranks_follow_the_steps_met() -> None:
    s = parse_scenario(two_class_scenario(load={"rates": [1.0, 2.0, 3.0], "duration_s": 30})).scenario
    agree = compare(s, live_records(p1_misses_from=2, p2_misses_from=1))
    assert agree is not None and agree.ranks_agree
    assert [d.passed for d in agree.deployments] == [2, 1]
    assert agree.deployments[0].live_capacity == pytest.approx((2.0 * 2 / 2, 3.0 * 2 / 2))
    worse = compare(s, live_records(p1_misses_from=0, p2_misses_from=1))
    assert worse is not None and not worse.ranks_agree and worse.inversions == [(1, 2)]
    assert compare(parse_scenario(SMALL, need_configurations=False).scenario, []) is None


def test_live_steps_are_judged_on_the_servers_own_latencies() -> None:
    """The live path's delay (client TTFT well above the server's own) does not count against a deployment."""
    slo = parse_scenario(two_class_scenario()).scenario.classes[0].slo       # TTFT 1500 ms, TPOT 60 ms
    late = replace(rec("p1a", "a", 0, False), ttft_s=2.0, server_ttft_s=0.5, server_tpot_s=0.05, output_tokens=32)
    assert met_at_server(late, slo)
    slow = replace(late, server_tpot_s=0.07)
    assert not met_at_server(slow, slo)
    assert not met_at_server(replace(late, server_ttft_s=None), slo)       # no server figures: the client's


def test_the_report_gains_a_plan_vs_live_section(tmp_path: Path) -> None:
    s = parse_scenario(two_class_scenario(load={"rates": [1.0, 2.0, 3.0], "duration_s": 30})).scenario
    (tmp_path / rf.SCENARIO_YAML).write_text(yaml.safe_dump(s.model_dump(mode="json")))
    rows = [RequestRecord(request_id=str(i), config=r.config, model="auto", sla_class=r.sla_class, status="ok",
                          slo_met=r.slo_met, ttft_s=0.1 if r.slo_met else 9.0, tpot_s=0.01, e2e_s=1.0 if r.slo_met
                          else 9.5, output_tokens=10, max_tokens=10, planned_prompt_tokens=10,
                          scheduled_time=1000.0 + r.start_s, send_time=1000.0 + r.start_s, rate_step=r.rate_step,
                          offered_rate=1.0) for i, r in enumerate(live_records(2, 1))]
    write_records(tmp_path / rf.RECORDS_JSONL, rows)
    page = render_report(tmp_path).read_text()
    assert "<h2>Plan vs live</h2>" in page and "the live ranking agrees with the plan" in page


def test_plan_errors_are_one_line(tmp_path: Path) -> None:
    src = tmp_path / "s.yaml"
    src.write_text(yaml.safe_dump(SMALL))
    runner = CliRunner()
    for args, words in ((["--objective", "fastest"], "--objective fastest: use one of max-rate"),
                        (["--kv-dtypes", "bf17"], "--kv-dtypes: unknown dtype 'bf17'"),
                        (["--max-num-seqs", "12x"], "--max-num-seqs 12x: give whole numbers"),
                        (["--gpus", "64"], "--gpus 64: the hardware has 4 GPUs")):
        res = runner.invoke(app, ["plan", str(src), *args])
        assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output, res.output
    res = runner.invoke(app, ["plan", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(app, ["run", str(src)])
    assert res.exit_code == 2 and "configurations: nothing to deploy" in res.output and "parallax plan" in res.output
    res = runner.invoke(app, ["validate", str(src)])
    assert res.exit_code == 0 and "a question for `parallax plan" in res.output and "tp4pp1" in res.output
