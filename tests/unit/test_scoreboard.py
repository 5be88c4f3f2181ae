"""Scoreboard assembly from PromQL answers, and the Pareto frontier."""

import math

import pytest

from controllers.scoreboard import FrontierPoint, assemble, build_queries, config_points, pareto_frontier


def test_queries_use_the_metric_contract_and_the_window() -> None:
    q = build_queries(20)
    assert "ray_parallax_requests(_total)?" in q["rate"] and "[20s]" in q["rate"]
    assert 'status!="ok"' in q["errors"]
    assert q["ttft_p99"].startswith("histogram_quantile(0.99") and "ray_parallax_ttft_seconds_bucket" in q["ttft_p99"]
    assert "ray_vllm_num_requests_waiting" in q["queue"]
    assert "vllm:kv_cache_usage_perc" in build_queries(5, engine_prefix="vllm:")["kv"]


def test_assemble_computes_attainment_goodput_and_per_gpu_throughput() -> None:
    chat = {"config": "tp8", "sla_class": "chat"}
    answers = {
        "finished": [(chat, 40.0)], "rate": [(chat, 2.0)], "errors": [(chat, 0.5)], "met": [(chat, 1.5)],
        "tokens": [(chat, 800.0)], "ttft_p90": [(chat, 0.3)], "ttft_p99": [(chat, math.nan)],
        "queue": [({"config": "tp8"}, 4.0)], "kv": [({"config": "tp8"}, 0.25)],
    }
    b = assemble(answers, {"tp8": 8}, now=12.0)
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
    board = assemble({"rate": [(a, 1.0), (b, 1.0)], "tokens": [(a, 80.0), (b, 160.0)],
                      "e2e_p90": [(a, 1.0), (b, 3.0)]}, {"tp8": 8}, 0.0)
    (pt,) = config_points(board)
    assert pt.throughput == pytest.approx(30.0) and pt.latency == 3.0


def test_client_side_errors_count_when_the_server_could_not_record_them() -> None:
    lab = {"config": "tp1x8", "sla_class": "chat"}
    b = assemble({"rate": [(lab, 1.0)], "met": [(lab, 1.0)], "client_rate": [(lab, 2.0)],
                  "client_errors": [(lab, 1.5)]}, {"tp1x8": 8}, 0.0, window_s=10)
    p = b.pair("tp1x8", "chat")
    assert p.error_rate == pytest.approx(0.75) and p.samples == 20
