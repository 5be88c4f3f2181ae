"""A load schedule of phases: each phase its own rate and class mix, on one timeline; records and the summary
name the phase; bad schedules are refused with the field and the fix."""

import copy
from collections import Counter
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.resolve import parse_scenario
from loadgen.errors import LoadError
from loadgen.plan import Workload, build_plan
from loadgen.records import RequestRecord
from loadgen.summary import ALL_CONFIGS, rescore, summarize
from schema.scenario import ScenarioError
from schema.traffic import SLO, ConstantArrival, FixedLength, LoadConfig, PoissonArrival, TrafficClass

CHAT = TrafficClass(name="chat", share=0.5, slo=SLO(ttft_ms=450), input=FixedLength(value=100),
                    output=FixedLength(value=20))
SUMMARIZE = TrafficClass(name="summarize", share=0.5, slo=SLO(ttft_ms=2000), input=FixedLength(value=4000),
                         output=FixedLength(value=200))
CLASSES = [CHAT, SUMMARIZE]


def schedule(*phases: dict[str, Any], arrival: Any = None, **load: Any) -> LoadConfig:
    return LoadConfig(arrival=arrival or PoissonArrival(), phases=list(phases), **load)


def plan(load: LoadConfig, classes: list[TrafficClass] = CLASSES):  # type: ignore[no-untyped-def]
    return build_plan(classes, load, Workload(classes))


def test_each_phase_is_a_step_with_its_own_rate_mix_and_length() -> None:
    load = schedule({"name": "day", "duration_s": 4, "rate": 10, "shares": {"chat": 1.0}},
                    {"duration_s": 2, "rate": 5, "shares": {"chat": 0.2, "summarize": 0.8}},
                    arrival=ConstantArrival())
    steps = plan(load)
    assert [(s.index, s.phase, s.duration_s, s.offered_rate) for s in steps] == [
        (0, "day", 4, 10), (1, "phase-2", 2, 5)]
    assert steps[0].class_rates == {"chat": 10.0, "summarize": 0.0}   # a class the phase leaves out sends nothing
    assert steps[1].class_rates == pytest.approx({"chat": 1.0, "summarize": 4.0})
    # constant arrivals: exactly rate × duration requests, each inside its phase's own time
    assert [len(s.requests) for s in steps] == [40, 10]
    assert {r.sla_class for r in steps[0].requests} == {"chat"}
    for s in steps:
        assert all(0 <= r.at_s < s.duration_s for r in s.requests)
        assert {(r.rate_step, r.phase) for r in s.requests} == {(s.index, s.phase)}
    assert next(r.offered_rate for r in steps[1].requests if r.sla_class == "summarize") == pytest.approx(4.0)
    assert load.planned_s == 6


def test_shares_are_kept_and_rates_are_poisson_per_phase() -> None:
    load = schedule({"duration_s": 200, "rate": 20, "shares": {"chat": 0.7, "summarize": 0.3}},
                    {"duration_s": 200, "rate": 5, "shares": {"chat": 0.1, "summarize": 0.9}}, seed=3)
    steps = plan(load)
    for s, (n, chat) in zip(steps, [(4000, 0.7), (1000, 0.1)], strict=True):
        counts = Counter(r.sla_class for r in s.requests)
        total = sum(counts.values())
        assert abs(total - n) < 4 * np.sqrt(n)                          # Poisson count: 4 standard deviations
        assert abs(counts["chat"] / total - chat) < 4 * np.sqrt(chat * (1 - chat) / total)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    phases = ({"duration_s": 5, "rate": 4, "shares": {"chat": 0.5, "summarize": 0.5}},
              {"duration_s": 5, "rate": 8, "shares": {"chat": 0.9, "summarize": 0.1}})

    def fingerprint(seed: int) -> list[tuple[float, str]]:
        return [(r.at_s, r.sla_class) for s in plan(schedule(*phases, seed=seed)) for r in s.requests]
    assert fingerprint(1) == fingerprint(1)
    assert fingerprint(1) != fingerprint(2)


def test_warmup_precedes_the_first_phase_with_its_traffic() -> None:
    steps = plan(schedule({"duration_s": 3, "rate": 10, "shares": {"summarize": 1.0}},
                          {"duration_s": 3, "rate": 10, "shares": {"chat": 1.0}},
                          arrival=ConstantArrival(), warmup_s=1))
    assert steps[0].length_s == 4 and steps[1].length_s == 3
    warm = [r for r in steps[0].requests if r.warmup]
    assert len(warm) == 10 and {r.sla_class for r in warm} == {"summarize"}
    assert not any(r.warmup for r in steps[1].requests)


@pytest.mark.parametrize(("load", "words"), [
    ({"phases": [{"duration_s": 1, "rate": 1, "shares": {"chat": 0.5, "summarize": 0.3}}]}, "sum to 0.8, not 1"),
    ({"phases": [{"duration_s": 1, "rate": 1, "shares": {"chat": 1.0, "summarize": 0.0}}]}, "must be > 0"),
    ({"phases": [{"duration_s": 0, "rate": 1, "shares": {"chat": 1.0}}]}, "greater than 0"),
    ({"phases": [{"duration_s": 1, "rate": 1, "shares": {}}]}, "at least 1 item"),
    ({"phases": [{"duration_s": 1, "rate": 1, "shares": {"chat": 1}}], "rates": [1, 2]}, "remove load.rates"),
    ({"phases": [{"duration_s": 1, "rate": 1, "shares": {"chat": 1}}], "duration_s": 60},
     "remove load.duration_s"),
    ({"phases": [{"duration_s": 1, "rate": 1, "shares": {"chat": 1}}], "arrival": {"kind": "closed"}},
     "not closed"),
    ({"phases": [{"duration_s": 1, "rate": 1, "shares": {"chat": 1}}], "arrival": {"kind": "poisson", "rate": 3}},
     "remove load.arrival.rate"),
    ({"phases": [{"name": "a", "duration_s": 1, "rate": 1, "shares": {"chat": 1}},
                 {"name": "a", "duration_s": 1, "rate": 1, "shares": {"chat": 1}}]}, "a are used twice"),
])
def test_a_schedule_that_makes_no_sense_is_refused(load: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        LoadConfig.model_validate(load)


BASE: dict[str, Any] = {
    "name": "t", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 8},
    "configurations": [{"name": "tp8", "tp": 8}],
    "classes": [c.model_dump(mode="json", exclude_none=True) for c in CLASSES],
    "load": {"phases": [{"name": "day", "duration_s": 60, "rate": 2, "shares": {"chat": 0.9, "summarize": 0.1}},
                        {"name": "night", "duration_s": 120, "rate": 1, "shares": {"summarize": 1.0}}]},
}


def test_a_scenario_schedule_names_known_classes_and_no_own_arrivals() -> None:
    bad = copy.deepcopy(BASE)
    bad["load"]["phases"][1]["shares"] = {"batch": 1.0}
    bad["classes"][0]["arrival"] = {"kind": "poisson", "rate": 2}
    with pytest.raises(ScenarioError) as e:
        parse_scenario(bad, "s.yaml")
    assert ("load.phases[1].shares", "'batch' is not a class; use one of chat, summarize") in e.value.problems
    assert any(f == "classes[0].arrival" and "remove this class's arrival" in m for f, m in e.value.problems)
    with pytest.raises(LoadError, match="'batch' is not a class"):   # the load generator checks it too
        s = parse_scenario(copy.deepcopy(BASE)).scenario
        plan(s.load.model_copy(update={"phases": [s.load.phases[0].model_copy(update={"shares": {"batch": 1.0}})]}))


def test_a_run_folders_scenario_reads_back() -> None:
    """`parallax run` writes the scenario with every field (defaults included); it must validate again."""
    data = copy.deepcopy(BASE)
    data["controller"] = {"policy": "repartition", "repartition": {"interval_s": 20, "min_dwell_s": 40}}
    s = parse_scenario(data).scenario
    again = parse_scenario(s.model_dump(mode="json")).scenario
    assert again == s and again.load.phase_names == ["day", "night"]


def test_a_phase_is_found_by_name_or_number() -> None:
    load = parse_scenario(copy.deepcopy(BASE)).scenario.load
    assert [load.phase_index(k) for k in ("day", "night", "1", "2")] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"no phase '3'; give a phase's name or number \(1 to 2\): day, night"):
        load.phase_index("3")


def test_a_phase_and_the_whole_schedule_as_traffic_mixes_for_the_planner() -> None:
    s = parse_scenario(copy.deepcopy(BASE)).scenario
    night = s.phase_mix(1)
    assert [(c.name, c.share) for c in night.classes] == [("summarize", 1.0)]
    assert night.load.arrival.rate == 1 and not night.load.phases   # type: ignore[union-attr]
    whole = s.schedule_mix()
    # day sends 120 requests (108 chat, 12 summarize), night 120 summarize: 240 in 180 s
    assert {c.name: c.share for c in whole.classes} == pytest.approx({"chat": 108 / 240, "summarize": 132 / 240})
    assert whole.load.arrival.rate == pytest.approx(240 / 180)   # type: ignore[union-attr]


def _record(i: int, phase: str, step: int, config: str, cls: str, ttft: float) -> RequestRecord:
    return RequestRecord(request_id=str(i), sla_class=cls, config=config, model="auto", rate_step=step, phase=phase,
                         offered_rate=1.0, scheduled_time=100.0 + i, send_time=100.0 + i, ttft_s=ttft, tpot_s=0.01,
                         e2e_s=ttft + 1, prompt_tokens=10, planned_prompt_tokens=10, output_tokens=10,
                         max_tokens=10, status="ok")


def test_the_summary_gives_each_phase_over_every_configuration() -> None:
    # day: 10 chat on tp8 (fast) + 10 chat on tp1 (half of them slow); night: 4 chat on tp1, all slow
    records = [_record(i, "day", 0, "tp8", "chat", 0.1) for i in range(10)]
    records += [_record(10 + i, "day", 0, "tp1", "chat", 0.1 if i % 2 else 0.9) for i in range(10)]
    records += [_record(20 + i, "night", 1, "tp1", "chat", 0.9) for i in range(4)]
    slos = {"chat": SLO(ttft_ms=450)}
    s = summarize(rescore(records, slos), slos, {0: 10.0, 1: 20.0})
    phases = {(g.phase, g.config, g.sla_class): g for g in s.phases}
    assert set(phases) == {("day", ALL_CONFIGS, "chat"), ("night", ALL_CONFIGS, "chat")}
    day, night = phases[("day", ALL_CONFIGS, "chat")], phases[("night", ALL_CONFIGS, "chat")]
    assert (day.count, day.slo_attainment, day.goodput) == (20, 0.75, 1.5)   # 15 met in 10 s
    assert (night.count, night.goodput, night.rate_step) == (4, 0.0, 1)
    assert {g.phase for g in s.groups} == {"day", "night"}                   # per configuration too
