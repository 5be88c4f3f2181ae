"""Scoreboard: its queries are the recording rules' series, assembly of their answers, the Pareto frontier."""

import math
import re

import pytest

from controllers.scoreboard import (
    FrontierPoint,
    assemble,
    assemble_traffic,
    build_queries,
    config_points,
    pareto_frontier,
    traffic_queries,
)
from monitoring import rules as r
from schema.deployment import ParallelConfig

SELECTOR = re.compile(r'^(parallax:\w+)\{(.*)\}$')


def test_every_per_class_figure_is_a_recording_rule_series() -> None:
    """The controller reads exactly the series the dashboards show: each per-class query selects, by name and
    labels, a series `recording_rules` records (the engine gauges are the only raw queries)."""
    rules = r.recording_rules([ParallelConfig(name="tp8", tp=8)])["groups"][0]["rules"]
    recorded = {(x["record"], frozenset(x["labels"].items())) for x in rules}
    q = build_queries()
    for key, expr in q.items():
        if key in ("queue", "kv"):
            continue
        match = SELECTOR.match(expr)
        assert match, expr
        labels = frozenset(tuple(p.split("=", 1)) for p in match.group(2).replace('"', "").split(", "))
        assert (match.group(1), labels) in recorded, expr
    assert q["attainment"] == f'{r.SLO_ATTAINMENT}{{source="server"}}'
    assert "ray_vllm_num_requests_waiting" in q["queue"]
    assert "vllm:kv_cache_usage_perc" in build_queries(engine_prefix="vllm:")["kv"]


def test_the_traffic_reader_reads_the_per_class_rules() -> None:
    rules = r.recording_rules([])["groups"][0]["rules"]
    recorded = {(x["record"], frozenset(x["labels"].items())) for x in rules}
    for expr in traffic_queries().values():
        match = SELECTOR.match(expr)
        assert match, expr
        labels = frozenset(tuple(p.split("=", 1)) for p in match.group(2).replace('"', "").split(", "))
        assert (match.group(1), labels) in recorded and match.group(1).startswith("parallax:class_"), expr


def test_traffic_is_per_class_with_the_rate_on_the_engines_clock() -> None:
    chat, summ = {"sla_class": "chat", "source": "server"}, {"sla_class": "summarize", "source": "server"}
    answers = {"rate": [(chat, 2.0), (summ, 0.5)], "prompt_mean": [(chat, 106.0), (summ, 4096.0)],
               "prompt_p90": [(chat, 180.0), (summ, math.nan)], "output_mean": [(chat, 64.0)],
               "output_p50": [(chat, 60.0)]}
    t = assemble_traffic(answers, time_scale=5)
    assert t["chat"].rate == 10.0 and t["summarize"].rate == 2.5      # wall req/s × wall s per engine s
    assert t["chat"].prompt_tokens.mean == 106 and t["chat"].prompt_tokens.quantiles.p90 == 180
    assert t["summarize"].prompt_tokens.quantiles.p90 is None           # NaN: no data in the window
    assert t["chat"].output_tokens.quantiles.at(0.5) == 60 and t["summarize"].output_tokens.mean is None


def test_assemble_takes_attainment_goodput_and_per_gpu_throughput_as_recorded() -> None:
    chat = {"config": "tp8", "sla_class": "chat"}
    answers = {
        "rate": [(chat, 2.0)], "error_ratio": [(chat, 0.25)], "attainment": [(chat, 0.75)], "goodput": [(chat, 1.5)],
        "tokens": [(chat, 800.0)], "tokens_per_gpu": [(chat, 100.0)], "ttft_p90": [(chat, 0.3)],
        "ttft_p99": [(chat, math.nan)], "queue": [({"config": "tp8"}, 4.0)], "kv": [({"config": "tp8"}, 0.25)],
    }
    b = assemble(answers, now=12.0, window_s=20)
    p = b.pair("tp8", "chat")
    assert p.samples == 40 and p.attainment == pytest.approx(0.75) and p.goodput == 1.5
    assert p.error_rate == pytest.approx(0.25) and p.output_tps_per_gpu == 100.0
    assert p.ttft.p90 == 0.3 and p.ttft.p99 is None        # NaN (empty histogram) is no data
    assert p.queue_depth == 4.0 and p.kv_usage == 0.25
    assert b.pair("pp8", "chat").samples == 0               # unknown pair: empty, not an error
    row = p.flat()
    assert row["ttft_p90"] == 0.3 and row["config"] == "tp8"


def test_pareto_frontier_drops_dominated_configs() -> None:
    pts = [FrontierPoint("tp8", 100, 0.2), FrontierPoint("pp8", 300, 0.8), FrontierPoint("tp4pp2", 150, 0.9)]
    assert [p.config for p in pareto_frontier(pts)] == ["tp8", "pp8"]


def test_config_points_sum_throughput_and_take_worst_class_latency() -> None:
    a = {"config": "tp8", "sla_class": "chat"}
    b = {"config": "tp8", "sla_class": "sum"}
    board = assemble({"rate": [(a, 1.0), (b, 1.0)], "tokens_per_gpu": [(a, 10.0), (b, 20.0)],
                      "e2e_p90": [(a, 1.0), (b, 3.0)]}, 0.0)
    (pt,) = config_points(board)
    assert pt.throughput == pytest.approx(30.0) and pt.latency == 3.0


def test_client_side_errors_count_when_the_server_could_not_record_them() -> None:
    lab = {"config": "tp1x8", "sla_class": "chat"}
    b = assemble({"rate": [(lab, 1.0)], "error_ratio": [(lab, 0.0)], "attainment": [(lab, 1.0)],
                  "client_rate": [(lab, 2.0)], "client_error_ratio": [(lab, 0.75)]}, 0.0, window_s=10)
    p = b.pair("tp1x8", "chat")
    assert p.error_rate == pytest.approx(0.75) and p.samples == 20
