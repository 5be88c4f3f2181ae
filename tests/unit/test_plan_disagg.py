"""The planner's disaggregated candidates where physics knows the answer (Llama-3.1-8B over two H100s, as
tests/unit/test_disagg_physics.py sets them by hand; here the planner finds them), its output, and its clear
message when no decode replica can hold a request.

- Long prompts, short answers, a tight TPOT: an aggregated replica's decodes wait behind every 4000-token
  prefill chunk; the planner ranks 1P+1D first.
- Short prompts, long answers: the prefill GPU would idle; the planner keeps an aggregated split first.
- The KV handoff across nodes, then over a slower NIC: the disaggregated capacity shrinks against the same
  aggregated reference.
- A handoff's cost grows with the prompt it carries.
"""

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controllers.plan.candidates import Knobs, Pool, Prefill, Shape
from controllers.plan.disagg import enumerate_disaggregated
from controllers.plan.evaluate import COARSE, PlanError, Setup, capacity
from controllers.plan.parallel import Runner, runner
from controllers.plan.proposal import proposal
from controllers.plan.result import entries, why
from controllers.plan.search import Evaluated, Plan, PlanOptions, budget_of, search
from deployments.resolve import Resolved, parse_scenario

QUICK = PlanOptions(refine_pools=3, seeds=1, top=3)
LONG = (4000, 100, 1000.0, 15.0)     # ISL, OSL, TTFT, TPOT (an idle 8B decode step on H100 is ~7 ms)


@pytest.fixture(scope="module")
def pool() -> Iterator[Runner]:
    with runner() as r:
        yield r


def scenario(isl: int, osl: int, ttft_ms: float, tpot_ms: float, gpus_per_node: int = 2, nodes: int = 1,
             engine: dict[str, Any] | None = None) -> Resolved:
    return parse_scenario({
        "name": "t", "model": "llama-3.1-8b", "dtype": "bf16",
        "hardware": {"gpu": "h100-sxm", "gpus_per_node": gpus_per_node, "nodes": nodes},
        "engine": engine or {},
        "classes": [{"name": "c", "share": 1.0, "slo": {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "attainment": 0.9},
                     "input": {"kind": "fixed", "value": isl}, "output": {"kind": "fixed", "value": osl}}],
        "load": {"arrival": {"kind": "poisson", "rate": 1}}}, need_configurations=False)


def best(plan: Plan, disaggregated: bool) -> Evaluated:
    return next(e for e in plan.ranked if e.candidate.disaggregated == disaggregated)


@pytest.fixture(scope="module")
def long_plan(pool: Runner) -> Plan:
    return search(scenario(*LONG), QUICK, pool)


def test_long_prompts_short_answers_and_a_tight_tpot_make_the_planner_disaggregate(long_plan: Plan) -> None:
    winner = long_plan.ranked[0]
    assert winner.candidate.disaggregated, [(e.candidate.label(1), e.max_rate) for e in long_plan.ranked]
    assert winner.max_rate > best(long_plan, False).max_rate > 0
    assert winner.candidate.pools[0].label == "1P(TP1)+1D(TP1)"


def test_the_json_says_which_kind_each_deployment_is_and_why_disaggregation_wins(long_plan: Plan) -> None:
    ranked = entries(long_plan)
    assert {e["kind"] for e in ranked} == {"aggregated", "disaggregated"}
    first = ranked[0]
    assert first["kind"] == "disaggregated"
    assert first["deployment"][0]["prefill"] == {"tp": 1, "pp": 1, "replicas": 1}
    assert first["deployment"][0]["decode"] == {"tp": 1, "pp": 1, "replicas": 1}
    lines = why(long_plan, 1)
    assert any(line.startswith("disaggregated 1P(TP1)+1D(TP1) beats the best aggregated") for line in lines), lines
    assert any("KV handoff" in line for line in lines), lines


def test_write_scenario_gives_a_disaggregated_winner_as_a_disagg_configuration(long_plan: Plan) -> None:
    r = scenario(*LONG)
    s = proposal(r, long_plan, 1)
    (config,) = s.configurations
    assert config.disagg is not None and config.disagg.prefill.replicas == 1 and config.disagg.decode.replicas == 1
    again = parse_scenario(yaml.safe_load(yaml.safe_dump(s.model_dump(mode="json", exclude_unset=True))))
    assert again.scenario.configurations[0].disagg == config.disagg


def test_short_prompts_long_answers_keep_the_plan_aggregated(pool: Runner) -> None:
    plan = search(scenario(100, 500, 1000.0, 50.0), QUICK, pool)
    assert not plan.ranked[0].candidate.disaggregated
    assert plan.ranked[0].max_rate > best(plan, True).max_rate > 0
    assert any("loses to the best aggregated" in line for line in why(plan, 1))


def test_a_slower_link_shrinks_the_disaggregated_gain(long_plan: Plan, pool: Runner) -> None:
    """The same two GPUs, one per node: the handoff goes through the NICs (then a 10 GbE one); measured
    against the one-node plan's best aggregated deployment."""
    reference = best(long_plan, False).max_rate
    apart = scenario(*LONG, gpus_per_node=1, nodes=2)
    slow = dataclasses.replace(apart, gpu=apart.gpu.model_copy(update={"inter_node_gbps": 1.25}))
    only = dataclasses.replace(QUICK, heterogeneous=False)
    gains = [best(long_plan, True).max_rate / reference] + [
        best(search(r, only, pool), True).max_rate / reference for r in (apart, slow)]
    assert gains[0] >= gains[1] >= gains[2] and gains[0] > gains[2], gains


def test_a_handoff_costs_more_the_longer_the_prompt() -> None:
    transfers = []
    for isl in (1000, 4000, 16000):
        r = scenario(isl, 100, 10_000.0, 50.0, gpus_per_node=1, nodes=2)
        found = enumerate_disaggregated(Setup.of(r, False), [_knobs(r)], budget_of(r, None), "max-rate", 0.0)
        transfers.append(next(s.fluid.transfer_s for s in found.screened
                              if s.candidate.pools[0].label == "1P(TP1)+1D(TP1)"))
    assert transfers[0] < transfers[1] < transfers[2], transfers


def _knobs(r: Resolved) -> Knobs:
    s = r.scenario
    return Knobs(s.resolved_kv_dtype, s.engine.max_num_seqs, s.engine.max_num_batched_tokens)


def test_a_decode_pool_that_cannot_hold_one_request_is_never_proposed_and_the_plan_says_so(pool: Runner) -> None:
    """A 1,500-token prompt fits a prefill replica under max_model_len 2,048; the whole 2,500-token request
    fits no replica."""
    r = scenario(1500, 1000, 1000.0, 50.0, engine={"max_model_len": 2048})
    found = enumerate_disaggregated(Setup.of(r, False), [_knobs(r)], budget_of(r, None), "max-rate", 0.0)
    assert found.screened == []
    assert any(x.startswith("no decode replica fits") and "engine.max_model_len" in x for x in found.rejected)
    with pytest.raises(PlanError, match=r"no decode replica fits: .*must hold the longest request"):
        search(r, QUICK, pool)


def test_a_slower_measured_decode_shape_lowers_a_disaggregated_pools_estimate_and_capacity() -> None:
    """Correction factors (measured ÷ predicted) reach disaggregated pools: a decode shape measured at twice its
    predicted TPOT leaves the fluid screen and the simulated capacity less room under the same TPOT target."""
    r = scenario(*LONG)
    plain = Setup.of(r, False)
    slow = plain.corrected({(1, 1): (1.0, 2.0)})
    label = "1P(TP1)+1D(TP1)"
    rates = [next(s.rate for s in enumerate_disaggregated(st, [_knobs(r)], budget_of(r, None), "max-rate", 0.0).screened
                  if s.candidate.pools[0].label == label) for st in (plain, slow)]
    assert rates[1] < rates[0], rates
    one = Pool(Shape(1, 1), 1, ("c",), Prefill(Shape(1, 1), 1))
    caps = [capacity(st, one, _knobs(r), COARSE, 0).rate for st in (plain, slow)]
    assert caps[1] < caps[0], caps
