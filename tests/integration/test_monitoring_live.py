"""Real Prometheus scraping real exporters of the contract's metric names (a local Ray with an actor
recording through ray.util.metrics, prometheus_client exporters for the load generator, the controller
and a plain vLLM server): every recording rule evaluates, and every dashboard query returns data."""

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from controllers.cli.app import app
from controllers.scoreboard import read_traffic
from monitoring import rules as r
from monitoring.dashboards.check import check_dashboard
from monitoring.dashboards.export import rendered_dashboards
from monitoring.prometheus import PrometheusHandle, ScrapeTarget, start_prometheus, stop_prometheus
from monitoring.promql import PromClient
from tests.support.metric_sources import (
    ALWAYS_MET,
    CLASSES,
    CONFIGS,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    PromClientSource,
    RaySource,
    controller_source,
    loadgen_source,
    plain_vllm_source,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


WINDOW_S = 30   # the recording rules' window in this test's Prometheus

@dataclass
class Live:
    prometheus: PrometheusHandle
    client: PromClient
    rules: dict[str, Any]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    sources: list[RaySource | PromClientSource] = []
    handle = None
    with tempfile.TemporaryDirectory(prefix="pxmon") as tmp:
        try:
            for s in (RaySource(), loadgen_source(), controller_source(), plain_vllm_source()):
                sources.append(s.start())
            targets = [ScrapeTarget(job, s.port) for job, s in zip(("ray", "loadgen", "controller", "vllm"), sources,
                                                                    strict=True)]
            rules = r.recording_rules(CONFIGS, window=f"{WINDOW_S}s", interval_s=1)
            handle = start_prometheus(Path(tmp), targets, rules, scrape_interval_s=1)
            client = PromClient(handle.url, timeout_s=10)
            needed = ['parallax:ttft_seconds{source="server"}', 'parallax:ttft_seconds{source="client"}',
                      "rate(ray_vllm_num_preemptions_total[10s]) > 0", "rate(vllm:num_preemptions_total[10s]) > 0",
                      "parallax:output_tokens_per_gpu", "parallax_controller_routing_weight",
                      # ≥ 8 s of counter history, so a scrape between two increments of a round moves the
                      # ratios by little (see test_rule_values_follow_the_traffic)
                      "count_over_time(ray_parallax_slo_met_total[30s]) >= 8",
                      "count_over_time(parallax_client_slo_met_total[30s]) >= 8"]
            # Ray's metrics agent exports every second or so (metrics_report_interval_ms): poll.
            wait_until(lambda: all(client.query(q) for q in needed), 90,
                       lambda: f"Prometheus to hold {[q for q in needed if not client.query(q)]}", 0.5)
            yield Live(handle, client, rules)
            client.close()
        finally:
            if handle is not None:
                stop_prometheus(handle)
            for s in sources:
                s.stop()


def _one(client: PromClient, expr: str) -> dict[tuple[str, str], float]:
    return {(s.labels["config"], s.labels["sla_class"]): s.value for s in client.query(expr)}


def test_ray_exports_the_contract_names_with_rays_labels(live: Live) -> None:
    engine = live.client.query("ray_vllm_num_requests_running")
    assert {s.labels["model_name"] for s in engine} == {c.name for c in CONFIGS}
    assert all({"SessionName", "WorkerId", "config", "tp", "pp", "engine"} <= s.labels.keys() for s in engine)
    server = live.client.query('ray_parallax_requests_total{status="ok"}')
    assert {(s.labels["config"], s.labels["sla_class"]) for s in server} == {(c.name, k) for c in CONFIGS
                                                                             for k in CLASSES}
    plain = live.client.query("vllm:kv_cache_usage_perc")  # stored under vLLM's own name, colon included
    assert {s.labels["job"] for s in plain} == {"vllm"}


PER_CLASS = (r.CLASS_ARRIVAL_RATE, r.CLASS_PROMPT_TOKENS_MEAN, r.CLASS_PROMPT_TOKENS, r.CLASS_OUTPUT_TOKENS_MEAN,
             r.CLASS_OUTPUT_TOKENS)   # summed over configurations


def test_every_recording_rule_evaluates_for_every_pair(live: Live) -> None:
    pairs = {(c.name, k) for c in CONFIGS for k in CLASSES}
    for rule in live.rules["groups"][0]["rules"]:
        selector = ", ".join(f'{k}="{v}"' for k, v in rule["labels"].items())
        found = live.client.query(f"{rule['record']}{{{selector}}}")
        assert found, f"{rule['record']}{{{selector}}} has no data"
        if rule["record"] in PER_CLASS:
            assert {s.labels["sla_class"] for s in found} == set(CLASSES) and all(
                "config" not in s.labels for s in found), rule["record"]
        elif rule["record"] != r.CONFIG_GPUS:
            assert {(s.labels["config"], s.labels["sla_class"]) for s in found} == pairs, rule["record"]


def test_the_traffic_rules_read_what_arrived(live: Live) -> None:
    """Each request that ends has arrived: a class's arrival rate is its request rate summed over configurations;
    its prompts all have PROMPT_TOKENS[class] tokens, so the mean is exact and each quantile lies in that
    length's bucket."""
    c = live.client
    rate = {s.labels["sla_class"]: s.value for s in c.query(r.CLASS_ARRIVAL_RATE)}
    requests = {s.labels["sla_class"]: s.value for s in c.query(f'sum by (sla_class) ({r.REQUEST_RATE}'
                                                                 '{source="server"})')}
    # Arrivals and ends are counted in the same round of the source, so over the rules' window the two counts
    # differ only by a round a scrape split at either end: at most two rounds' requests of a class (rate()'s
    # extrapolation to the window's edges scaled in), however slowly a busy machine runs the rounds.
    per_round = {k: sum(1 if (c.name, k) == ALWAYS_MET else 2 for c in CONFIGS) for k in CLASSES}
    assert rate.keys() == requests.keys() == set(CLASSES)
    assert all(abs(rate[k] - requests[k]) * WINDOW_S <= 2 * 1.5 * per_round[k] for k in CLASSES), (rate, requests)
    mean = {s.labels["sla_class"]: s.value for s in c.query(r.CLASS_PROMPT_TOKENS_MEAN)}
    assert mean == pytest.approx({k: float(v) for k, v in PROMPT_TOKENS.items()})
    p90 = {s.labels["sla_class"]: s.value for s in c.query(f'{r.CLASS_PROMPT_TOKENS}{{quantile="0.9"}}')}
    assert 96 < p90["chat"] <= 128 and 3072 < p90["summarize"] <= 4096
    out = {s.labels["sla_class"]: s.value for s in c.query(r.CLASS_OUTPUT_TOKENS_MEAN)}
    assert out == pytest.approx(dict.fromkeys(CLASSES, float(OUTPUT_TOKENS)))
    # the controller's reader, through its query callable: the same series, the rate on a 2× slower engine clock
    traffic = read_traffic(lambda expr: [(s.labels, s.value) for s in c.query(expr)], time_scale=2)
    assert {k: t.rate for k, t in traffic.items()} == pytest.approx({k: 2 * v for k, v in rate.items()}, rel=0.1)
    assert traffic["summarize"].prompt_tokens.mean == pytest.approx(PROMPT_TOKENS["summarize"])
    assert traffic["chat"].output_tokens.mean == pytest.approx(OUTPUT_TOKENS)


def test_rule_values_follow_the_traffic(live: Live) -> None:
    c = live.client
    for source in ("server", "client"):
        attainment = _one(c, f'{r.SLO_ATTAINMENT}{{source="{source}"}}')
        assert attainment[ALWAYS_MET] == 1.0  # only slo_met ever counted: the "or 0" branch
        # Other pairs: one met + one violated, one ok + one failed per round. A scrape may fall between two
        # increments of a round, hence the tolerance.
        half = pytest.approx(0.5, abs=0.05)
        assert all(v == half for pair, v in attainment.items() if pair != ALWAYS_MET), attainment
        errors = _one(c, f'{r.ERROR_RATIO}{{source="{source}"}}')
        assert errors[ALWAYS_MET] == 0.0 and all(v == half for pair, v in errors.items() if pair != ALWAYS_MET)
        goodput = _one(c, f'{r.GOODPUT}{{source="{source}"}}')
        requests = _one(c, f'{r.REQUEST_RATE}{{source="{source}"}}')
        assert all(goodput[p] / requests[p] == half for p in goodput if p != ALWAYS_MET)
        rate = _one(c, f'{r.OUTPUT_TOKENS_RATE}{{source="{source}"}}')
        per_gpu = _one(c, f'{r.OUTPUT_TOKENS_PER_GPU}{{source="{source}"}}')
        gpus = {cfg.name: cfg.gpus for cfg in CONFIGS}
        for pair, v in per_gpu.items():
            assert v > 0 and math.isclose(v * gpus[pair[0]], rate[pair], rel_tol=1e-9)
        p99 = _one(c, f'{r.TTFT}{{source="{source}", quantile="0.99"}}')
        # Every TTFT is 35 ms on tp8 and 350 ms on tp2: the quantile lands in that observation's bucket.
        assert all(0.03 < v <= 0.04 for (cfg, _), v in p99.items() if cfg == "tp8")
        assert all(0.3 < v <= 0.4 for (cfg, _), v in p99.items() if cfg == "tp2")


@pytest.mark.parametrize("engine_prefix", ["ray_vllm_", "vllm:"])
def test_every_dashboard_query_returns_data(live: Live, engine_prefix: str) -> None:
    for dash in rendered_dashboards():
        checks = check_dashboard(dash, live.client, {"engine_prefix": [engine_prefix]}, range_s=60, step_s=2)
        assert len(checks) > 20
        assert [c for c in checks if not c.ok] == []


def test_dashboards_with_a_narrow_selection(live: Live) -> None:
    chosen = {"config": ["tp2"], "sla_class": ["chat", "summarize"], "source": ["client"]}
    for dash in rendered_dashboards():
        checks = check_dashboard(dash, live.client, chosen, range_s=60, step_s=2)
        bad = [c for c in checks if not c.ok]
        assert bad == []
        assert any('config=~"tp2"' in c.expr for c in checks)
        assert any('sla_class=~"(chat|summarize)"' in c.expr for c in checks)


def test_dashboards_check_command(live: Live) -> None:
    result = CliRunner().invoke(app, ["dashboards", "check", live.prometheus.url, "--var", "engine_prefix=vllm:",
                                      "--range", "60"])
    assert result.exit_code == 0, result.output
    assert "every dashboard query returned data" in result.output
