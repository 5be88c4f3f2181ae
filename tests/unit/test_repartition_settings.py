"""The repartition policy's knobs: defaults, and knobs that make no sense refused at `parallax validate` with the
field and the fix (`parallax run` runs the policy: tests/integration/test_run_repartition.py)."""

import copy
from typing import Any

import pytest

from deployments.resolve import parse_scenario
from schema.scenario import ScenarioError

BASE: dict[str, Any] = {
    "name": "t", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 2},
    "configurations": [{"name": "tp4", "tp": 4}, {"name": "tp1", "tp": 1, "replicas": 4}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 450}, "input": {"kind": "fixed", "value": 100},
                 "output": {"kind": "fixed", "value": 20}}],
    "controller": {"policy": "repartition"},
}


def with_controller(**controller: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    d["controller"] |= controller
    return d


def test_the_defaults_are_consistent() -> None:
    r = parse_scenario(copy.deepcopy(BASE)).scenario.controller.repartition
    assert (r.interval_s, r.min_dwell_s, r.forecast.kind, r.correction.min_factor, r.correction.max_factor) == (
        30, 60, "holt", 0.5, 2.0)
    assert r.min_dwell_s >= r.interval_s and r.plan_budget_s <= r.interval_s <= r.forecast.horizon_s


@pytest.mark.parametrize(("controller", "field", "words"), [
    ({"repartition": {"interval_s": 60, "min_dwell_s": 30}}, "controller.repartition",
     "min_dwell_s (30 s) is shorter than interval_s (60 s): a gain is seen once per re-plan, so it cannot be seen "
     "to hold; raise min_dwell_s to at least interval_s"),
    ({"repartition": {"interval_s": 20, "plan_budget_s": 30, "min_dwell_s": 60}}, "controller.repartition",
     "re-plans would overlap; lower plan_budget_s or raise interval_s"),
    ({"repartition": {"interval_s": 60, "min_dwell_s": 120, "forecast": {"kind": "ewma", "horizon_s": 30}}},
     "controller.repartition", "a forecast must reach the next re-plan; raise horizon_s"),
    ({"repartition": {"forecast": {"kind": "arima"}}}, "controller.repartition.forecast", "'constant', 'ewma'"),
    ({"repartition": {"forecast": {"kind": "holt", "beta": 0}}}, "controller.repartition.forecast.beta",
     "greater than 0"),
    ({"repartition": {"correction": {"min_factor": 1.5}}}, "controller.repartition.correction.min_factor",
     "less than or equal to 1"),
    ({"repartition": {"plan_budget_s": 0}}, "controller.repartition.plan_budget_s", "greater than 0"),
    ({"repartition": {"gpus": 0}}, "controller.repartition.gpus", "greater than 0"),
    ({"repartition": {"gpus": 24}}, "controller.repartition.gpus", "24 GPUs, but the hardware has 16; give 1 to 16"),
    ({"repartition": {"gpus": 6}}, "controller.repartition.gpus",
     "the configurations, the first split, need 8 GPUs but the budget is 6; raise gpus or deploy fewer"),
    ({"policy": "best-per-class", "repartition": {"gpus": 8}}, "controller",
     "repartition: only policy repartition reads it, not best-per-class; set controller.policy: repartition, or "
     "remove controller.repartition"),
    ({"interval_s": 40}, "controller", "repartition.interval_s (30 s) is shorter than interval_s (40 s)"),
])
def test_knobs_that_make_no_sense_name_the_field_and_the_fix(controller: dict[str, Any], field: str,
                                                             words: str) -> None:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(with_controller(**controller), "s.yaml")
    assert any(f == field and words in m for f, m in e.value.problems), e.value.problems


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"load": {"arrival": {"kind": "closed", "concurrency": 4}, "duration_s": 60}}, "load.arrival.kind",
     "policy repartition plans for the traffic's rate as one open arrival stream; a closed arrival has no rate: "
     "use poisson, gamma, constant, or another policy"),
    ({"configurations": [{"name": "pd", "disagg": {"prefill": {"tp": 1, "replicas": 2}, "decode": {"tp": 2}}}]},
     "configurations.0.disagg", "pd is disaggregated: policy repartition re-plans TP×PP pools and cannot price or "
     "move a prefill/decode pair; give it tp, pp and replicas, or use another policy"),
])
def test_what_the_live_policy_cannot_plan_or_price_is_refused(change: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ScenarioError) as e:
        parse_scenario({**copy.deepcopy(BASE), **change}, "s.yaml")
    assert any(f == field and words in m for f, m in e.value.problems), e.value.problems
