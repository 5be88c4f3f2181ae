"""The repartition policy's Serve fleet: each step waits at most its bound (a drain the bound the planner prices
it at, anything else the deploy timeout), and new configurations are priced at the modelled start until the
fleet has measured a vLLM start."""

from typing import Any

import pytest

from controllers.transition import serve_fleet
from controllers.transition.serve_fleet import DRAIN_BOUND_S, ServeFleet
from deployments.resolve import Resolved, parse_scenario
from deployments.routing_store import Routing
from deployments.steps import Deploy, Drain, Remove, Route, Scale, Step
from schema.deployment import ParallelConfig

TP1 = ParallelConfig(name="tp1", tp=1, replicas=2)


def resolved(engine: dict[str, Any]) -> Resolved:
    return parse_scenario({
        "name": "t", "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1},
        "engine": engine, "configurations": [{"name": "tp1", "tp": 1, "replicas": 2}],
        "server": {"deploy_timeout_s": 77},
        "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500}, "input": {"kind": "fixed", "value": 8},
                     "output": {"kind": "fixed", "value": 4}}],
    })


@pytest.fixture
def live_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_fleet.fleet, "serving_set", lambda: Routing(1, {"chat": {"tp1": 1.0}}, {"tp1": TP1}))


@pytest.mark.parametrize(("step", "bound"), [
    (Drain("tp1", "r"), DRAIN_BOUND_S),
    (Scale("tp1", 1, "r"), DRAIN_BOUND_S),        # down: the removed replica drains
    (Scale("tp1", 3, "r"), 77.0),                 # up: a replica starts
    (Deploy(ParallelConfig(name="tp2", tp=2), "r"), 77.0),
    (Route({"chat": {"tp1": 1.0}}, "r"), 77.0),
    (Remove("tp1", "r"), 77.0),
])
def test_each_step_waits_at_most_its_bound(live_set: None, step: Step, bound: float) -> None:
    assert ServeFleet(resolved({"kind": "sim", "startup_s": 3})).timeout_s(step) == bound


def test_the_step_goes_to_the_fleet_with_its_bound(monkeypatch: pytest.MonkeyPatch, live_set: None) -> None:
    seen: list[tuple[Step, float]] = []
    monkeypatch.setattr(serve_fleet.fleet, "execute", lambda step, r, timeout_s: seen.append((step, timeout_s)) or 2.5)
    f = ServeFleet(resolved({"kind": "sim", "startup_s": 3}), drain_s=9.0)
    assert f.execute(Drain("tp1", "r")) == 2.5
    assert seen == [(Drain("tp1", "r"), 9.0)]


def test_a_simulated_start_is_the_scenarios_startup_s(monkeypatch: pytest.MonkeyPatch, live_set: None) -> None:
    monkeypatch.setattr(serve_fleet.fleet, "execute", lambda step, r, timeout_s: 12.0)
    f = ServeFleet(resolved({"kind": "sim", "startup_s": 3}))
    tp2 = ParallelConfig(name="tp2", tp=2)
    f.execute(Deploy(tp2, "r"))
    assert f.start_s(tp2) == 3.0   # the simulated engine's start is the scenario's, not Ray's overhead


def test_a_vllm_start_once_measured_wins_over_the_model(monkeypatch: pytest.MonkeyPatch, live_set: None) -> None:
    monkeypatch.setattr(serve_fleet.fleet, "execute", lambda step, r, timeout_s: 12.0)
    f = ServeFleet(resolved({"kind": "vllm", "model_path": "/nonexistent"}))
    tp2 = ParallelConfig(name="tp2", tp=2)
    modelled = f.start_s(tp2)
    f.execute(Deploy(tp2, "r"))
    assert modelled != 12.0 and f.start_s(tp2) == 12.0
    assert f.start_s(ParallelConfig(name="tp2b", tp=2)) == modelled


def test_the_configurations_serving_are_told_after_each_step_that_changes_them(
        monkeypatch: pytest.MonkeyPatch, live_set: None) -> None:
    """What the recording rules' GPU counts follow (controllers/run.py reloads them): the live set after a
    Deploy, Scale or Remove; a Route or Drain changes no configuration."""
    monkeypatch.setattr(serve_fleet.fleet, "execute", lambda step, r, timeout_s: 1.0)
    told: list[list[ParallelConfig]] = []
    f = ServeFleet(resolved({"kind": "sim", "startup_s": 3}), on_set=told.append)
    for step in (Route({"chat": {"tp1": 1.0}}, "r"), Drain("tp1", "r"), Deploy(ParallelConfig(name="tp2", tp=2), "r"),
                 Scale("tp1", 1, "r"), Remove("tp1", "r")):
        f.execute(step)
    assert told == [[TP1]] * 3
