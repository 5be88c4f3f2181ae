"""Draining a configuration that cannot serve, and restoring it: the controller's health mask."""

from pathlib import Path

import pytest

from controllers import runfolder
from controllers.controller import Controller, drain
from controllers.policies import Weights
from controllers.scoreboard import Sample
from deployments.resolve import load_scenario

ROOT = Path(__file__).resolve().parents[2]


class RecordingEndpoint:
    def __init__(self) -> None:
        self.applied: list[Weights] = []

    def set_weights(self, weights: Weights) -> None:
        self.applied.append({c: dict(w) for c, w in weights.items()})


def no_data(q: str) -> list[Sample]:
    return []  # stale scoreboard: the policy keeps its weights, only health changes routing


def test_drain_moves_the_share_in_proportion_and_never_strands_a_class() -> None:
    w = {"chat": {"a": 0.5, "b": 0.3, "c": 0.2}, "batch": {"a": 1.0, "b": 0.0, "c": 0.0}}
    out = drain(w, {"a"})
    assert out["chat"] == pytest.approx({"a": 0.0, "b": 0.6, "c": 0.4})
    assert out["batch"] == pytest.approx({"a": 0.0, "b": 0.5, "c": 0.5})
    assert drain(w, {"a", "b", "c"}) == w  # nowhere better to send it
    assert drain(w, set()) is w


def test_unhealthy_configuration_is_drained_then_restored(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT / "scenarios/demo.yaml").scenario
    down: set[str] = set()
    router = RecordingEndpoint()
    c = Controller(scenario, no_data, router, folder=tmp_path, health=lambda: set(down))
    c.apply_initial()
    before = router.applied[-1]
    c.tick()
    assert len(router.applied) == 1  # nothing changed, nothing sent

    down.add("tp8")
    decisions = c.tick()
    drained = router.applied[-1]
    assert all(ws["tp8"] == 0 and sum(ws.values()) == pytest.approx(1) for ws in drained.values())
    assert {d.policy for d in decisions} == {"health"} and "drained tp8" in decisions[0].reason
    assert c.state.weights == before  # the policy's own weights survive the outage
    c.tick()
    assert router.applied[-1] == drained  # still down: held, not re-sent
    assert len(router.applied) == 2

    down.clear()
    decisions = c.tick()
    assert router.applied[-1] == before
    assert "restored tp8" in decisions[0].reason
    logged = (tmp_path / runfolder.DECISIONS_JSONL).read_text()
    assert "drained tp8" in logged and "restored tp8" in logged


def test_a_failing_health_check_keeps_the_last_answer(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT / "scenarios/demo.yaml").scenario
    answers: list[set[str] | Exception] = [{"pp8"}, RuntimeError("serve unreachable"), set()]

    def health() -> set[str]:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    router = RecordingEndpoint()
    c = Controller(scenario, no_data, router, health=health)
    c.tick()
    assert c.down == {"pp8"}
    c.tick()
    assert c.down == {"pp8"} and router.applied[-1]["chat"]["pp8"] == 0
    c.tick()
    assert c.down == set() and router.applied[-1]["chat"]["pp8"] > 0
