"""The controller step: routing applied, decisions logged and exported, stale data and router faults."""

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from controllers import runfolder
from controllers.controller import Controller
from controllers.policies import Weights
from controllers.scoreboard import Sample, build_queries
from deployments.resolve import load_scenario

ROOT = Path(__file__).resolve().parents[2]


class RecordingEndpoint:
    def __init__(self) -> None:
        self.applied: list[Weights] = []
        self.broken = False

    def set_weights(self, weights: Weights) -> None:
        if self.broken:
            raise ConnectionError("ingress down")
        self.applied.append({c: dict(w) for c, w in weights.items()})


def answers(att: dict[tuple[str, str], float]) -> dict[str, list[Sample]]:
    """Prometheus answers for pairs with 2 req/s and the given attainment; latency from attainment."""
    out: dict[str, list[Sample]] = {k: [] for k in build_queries()}
    for (cfg, cls), a in att.items():
        lab = {"config": cfg, "sla_class": cls}
        out["rate"].append((lab, 2.0))
        out["attainment"].append((lab, a))
        out["goodput"].append((lab, 2.0 * a))
        for q in ("ttft_p50", "ttft_p90", "ttft_p99"):
            out[q].append((lab, 0.1 if a > 0.95 else 3.0))
    return out


class Prom:
    def __init__(self) -> None:
        self.data: dict[str, list[Sample]] = {}
        self.down = False
        self.by_query = {v: k for k, v in build_queries().items()}

    def __call__(self, q: str) -> list[Sample]:
        if self.down:
            raise ConnectionError("connection refused")
        return self.data.get(self.by_query[q], [])


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Controller, Prom, RecordingEndpoint, list[float]]:
    scenario = load_scenario(ROOT / "scenarios/demo.yaml").scenario
    scenario = scenario.model_copy(update={"controller": scenario.controller.model_copy(
        update={"window_s": 20, "min_dwell_s": 10, "min_samples": 10, "explore_share": 0.1})})
    now = [1000.0]
    prom, router = Prom(), RecordingEndpoint()
    c = Controller(scenario, prom, router, folder=tmp_path, clock=lambda: now[0])
    return c, prom, router, now


def test_controller_routes_logs_and_exports(setup: tuple[Controller, Prom, RecordingEndpoint, list[float]],
                                            tmp_path: Path) -> None:
    c, prom, router, _now = setup
    c.apply_initial()
    assert router.applied[0]["chat"] == pytest.approx({"tp8": 1 / 3, "tp4pp2": 1 / 3, "pp8": 1 / 3})
    prom.data = answers({("tp8", "chat"): 1.0, ("tp4pp2", "chat"): 0.5, ("pp8", "chat"): 0.5,
                         ("tp8", "summarize"): 0.5, ("tp4pp2", "summarize"): 0.5, ("pp8", "summarize"): 1.0})
    ds = c.tick()
    assert {d.sla_class: d.chosen for d in ds} == {"chat": "tp8", "summarize": "pp8"}
    assert router.applied[-1]["chat"]["tp8"] == pytest.approx(0.9)
    text = generate_latest(c.metrics.registry).decode()
    assert 'parallax_controller_routing_weight{config="pp8",sla_class="summarize"} 0.9' in text
    assert "parallax_controller_stale 0.0" in text
    logged = runfolder.read_jsonl(tmp_path / runfolder.DECISIONS_JSONL)
    assert [d["chosen"] for d in logged] == ["tp8", "pp8"] and logged[0]["evidence"]["tp8"]["attainment"] == 1.0
    rows = runfolder.read_csv(tmp_path / runfolder.SCOREBOARD_CSV)
    assert len(rows) == 6 and {r["config"] for r in rows} == {"tp8", "tp4pp2", "pp8"}


def test_prometheus_down_keeps_last_routing_and_marks_stale(
        setup: tuple[Controller, Prom, RecordingEndpoint, list[float]]) -> None:
    c, prom, _router, now = setup
    prom.data = answers({("tp8", "chat"): 1.0, ("pp8", "chat"): 0.2, ("tp4pp2", "chat"): 0.2})
    c.tick()
    before = c.state.weights
    prom.down = True
    now[0] += 60
    assert c.tick() == []
    assert c.board.stale and "ConnectionError" in (c.board.error or "")
    assert c.state.weights == before
    assert "parallax_controller_stale 1.0" in generate_latest(c.metrics.registry).decode()
    prom.down, prom.data = False, {}          # back, but the series are gone: still stale
    now[0] += 2
    c.tick()
    assert c.board.stale and c.board.error.startswith("no parallax:request_rate series") and c.state.weights == before
    prom.data = answers({("tp8", "chat"): 0.2, ("pp8", "chat"): 1.0, ("tp4pp2", "chat"): 0.2})
    now[0] += 2
    (d,) = c.tick()
    assert not c.board.stale and d.chosen == "pp8"


def test_router_failure_keeps_state_and_retries(setup: tuple[Controller, Prom, RecordingEndpoint, list[float]]) -> None:
    c, prom, router, now = setup
    prom.data = answers({("tp8", "chat"): 1.0, ("pp8", "chat"): 0.2, ("tp4pp2", "chat"): 0.2})
    router.broken = True
    assert c.tick() == [] and c.router_error is not None
    assert c.state.classes == {}
    router.broken = False
    now[0] += 2
    assert [d.chosen for d in c.tick()] == ["tp8"] and c.router_error is None


def test_live_view_shows_weights_attainment_decisions_and_staleness(
        setup: tuple[Controller, Prom, RecordingEndpoint, list[float]]) -> None:
    from rich.console import Console

    from controllers.live_view import render

    c, prom, _router, now = setup
    prom.data = answers({("tp8", "chat"): 1.0, ("pp8", "chat"): 0.2, ("tp4pp2", "chat"): 0.2})
    c.tick()
    con = Console(record=True, width=160)
    con.print(render(c, "step 1/3"))
    out = con.export_text()
    assert "tp8" in out and "100%" in out and "0.90" in out and "chat → tp8: first choice" in out
    prom.down = True
    now[0] += 2
    c.tick()
    con = Console(record=True, width=160)
    con.print(render(c))
    assert "STALE: ConnectionError" in con.export_text()


def test_predicted_headroom_is_exported_from_the_simulators_capacity(
        setup: tuple[Controller, Prom, RecordingEndpoint, list[float]]) -> None:
    c, prom, _router, _now = setup
    c.capacities = {("chat", "tp8"): 40.0, ("chat", "pp8"): 0.0}
    prom.data = answers({("tp8", "chat"): 1.0, ("pp8", "chat"): 1.0})   # 2 + 2 req/s wall
    c.tick()
    text = generate_latest(c.metrics.registry).decode()
    rate = 4.0 * c.time_scale                                           # engine clock
    assert f'parallax_controller_predicted_headroom{{config="tp8",sla_class="chat"}} {1 - rate / 40}' in text
    assert 'parallax_controller_predicted_headroom{config="pp8",sla_class="chat"} -1.0' in text


def test_the_controller_follows_a_serving_set_that_changes(tmp_path: Path) -> None:
    """A transition replaces tp4pp2 and pp8 by tp4: the controller queries, routes and checks the health of the
    new set; the old configurations' weights, gauges and capacities are gone."""
    scenario = load_scenario(ROOT / "scenarios/demo.yaml").scenario
    now = [1000.0]
    live: list[tuple[list[str], Weights]] = [(["tp8", "tp4pp2", "pp8"], {})]
    prom, router = Prom(), RecordingEndpoint()
    c = Controller(scenario, prom, router, folder=tmp_path, clock=lambda: now[0], serving_set=lambda: live[-1],
                   health=lambda: {"tp4"})
    c.apply_initial()
    c.refresh_set()
    c.capacities = {("chat", "pp8"): 3.0, ("chat", "tp8"): 5.0}
    prom.data = answers({("tp8", "chat"): 1.0, ("pp8", "chat"): 0.5, ("tp4pp2", "chat"): 0.5})
    c.tick()
    assert 'config="pp8"' in generate_latest(c.metrics.registry).decode()
    after = {"chat": {"tp8": 1.0, "tp4": 0.0}, "summarize": {"tp4": 1.0}}
    live.append((["tp8", "tp4"], after))
    now[0] += 2
    c.tick()
    assert c.configs == ["tp8", "tp4pp2", "pp8"]            # not read yet: the loop reads it beside its steps
    c.refresh_set()
    now[0] += 2
    prom.data = answers({("tp8", "chat"): 1.0, ("tp4", "summarize"): 1.0})
    c.tick()
    assert c.configs == ["tp8", "tp4"] and c.capacities == {("chat", "tp8"): 5.0}
    assert "tp4" in c.down                                   # its health is checked: it is a live configuration
    assert all(set(row) <= {"tp8", "tp4"} for row in c.state.weights.values())
    assert all(set(row) <= {"tp8", "tp4"} for row in router.applied[-1].values())
    text = generate_latest(c.metrics.registry).decode()
    assert 'config="pp8"' not in text and 'config="tp4pp2"' not in text
