"""The controller against a real Prometheus scraping real Ray-exported metrics: it routes on them
(draining a configuration that fails half its requests), survives a Prometheus restart (stale
meanwhile, last routing kept) and resumes afterwards."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from controllers.controller import Controller, prom_query
from controllers.policies import Weights
from controllers.scoreboard import scoreboard_rules
from deployments.resolve import parse_scenario
from monitoring.prometheus import ScrapeTarget, start_prometheus, stop_prometheus
from monitoring.promql import PromClient
from tests.support.metric_sources import ALWAYS_MET, RaySource
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SCENARIO = {
    "name": "ctl", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 2},
    "configurations": [{"name": "tp8", "tp": 8}, {"name": "tp2", "tp": 2, "replicas": 2}],
    "classes": [
        {"name": "chat", "share": 0.5, "slo": {"ttft_ms": 450, "tpot_ms": 40, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 20}},
        {"name": "summarize", "share": 0.5, "slo": {"ttft_ms": 2000, "tpot_ms": 200, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 1000}, "output": {"kind": "fixed", "value": 20}},
    ],
    "controller": {"interval_s": 1, "window_s": 10, "min_samples": 5, "min_dwell_s": 0},
}


class Recorder:
    def __init__(self) -> None:
        self.applied: list[Weights] = []

    def set_weights(self, weights: Weights) -> None:
        self.applied.append(weights)


@pytest.fixture(scope="module")
def ray_source() -> Iterator[RaySource]:
    src = RaySource().start()
    yield src
    src.stop()


def test_controller_routes_on_live_metrics_and_survives_a_prometheus_restart(
        ray_source: RaySource, tmp_path: Path) -> None:
    resolved = parse_scenario(SCENARIO)
    targets = [ScrapeTarget("ray", ray_source.port)]
    rules = scoreboard_rules(resolved.scenario)
    prom = start_prometheus(tmp_path, targets, rules, scrape_interval_s=1)
    try:
        with PromClient(prom.url) as client:
            router = Recorder()
            c = Controller(resolved.scenario, prom_query(client), router, tmp_path)
            c.apply_initial()

            def routed() -> bool:
                c.tick()
                return c.state.classes.get("chat") is not None
            wait_until(routed, 60, lambda: f"the controller to route chat (board: {c.board})", 1)
            cfg, cls = ALWAYS_MET
            assert c.state.classes[cls].incumbent == cfg
            # the source fails half of every other pair's requests: tp2 is drained, chat goes all to tp8
            assert router.applied[-1][cls] == {cfg: 1.0, "tp2": 0.0}
            assert "tp2 is failing (50% errors): drained" in c.decisions[0].reason
            pair = c.board.pair(cfg, cls)
            assert pair.attainment == pytest.approx(1.0) and pair.ttft.p90 is not None and pair.samples >= 5
            assert 0 < c.board.pair("tp2", "chat").attainment < 0.9  # type: ignore[operator]

            before = c.state.weights
            stop_prometheus(prom)
            assert c.tick() == []
            assert c.board.stale and c.state.weights == before
            assert "parallax_controller_stale 1.0" in generate_latest(c.metrics.registry).decode()

            prom = start_prometheus(tmp_path, targets, rules, port=prom.port, scrape_interval_s=1)
            wait_until(lambda: (c.tick(), not c.board.stale)[1], 30, "fresh data after the restart", 1)
            assert c.state.weights == before or c.state.classes[cls].incumbent == cfg
            assert "parallax_controller_stale 0.0" in generate_latest(c.metrics.registry).decode()
    finally:
        stop_prometheus(prom)
