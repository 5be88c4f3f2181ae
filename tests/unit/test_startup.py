"""A replica's modelled start: its GPU's share of the weights over the host link, plus the warm-up."""

import pytest

from deployments.resolve import Resolved, parse_scenario
from deployments.startup import ENGINE_WARMUP_S, modelled_start_s, start_seconds, weights_load_s
from schema.deployment import ParallelConfig

TP1, TP2, PP2 = ParallelConfig(name="a", tp=1), ParallelConfig(name="b", tp=2), ParallelConfig(name="c", pp=2)


def scenario(gpu: str = "h100-sxm", **engine: object) -> Resolved:
    return parse_scenario({"name": "s", "model": "llama-3.1-8b", "hardware": {"gpu": gpu, "gpus_per_node": 8},
                           "engine": {"kind": "sim", **engine}, "configurations": [{"name": "a"}],
                           "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500},
                                        "input": {"kind": "fixed", "value": 8},
                                        "output": {"kind": "fixed", "value": 8}}]})


def test_weights_load_over_each_gpus_own_host_link() -> None:
    r = scenario()
    one = weights_load_s(r, TP1)
    assert 0.2 < one < 0.3                       # 8B bf16: ~16 GB at 64 GB/s
    assert weights_load_s(r, TP2) == pytest.approx(one / 2, rel=0.02)   # each GPU loads its half at once
    assert weights_load_s(r, PP2) < one * 0.6                           # half the layers (plus the embeddings)
    assert weights_load_s(scenario("a100-80g"), TP1) == pytest.approx(2 * one)   # PCIe Gen4: half the bandwidth
    assert modelled_start_s(r, TP1) == pytest.approx(one + ENGINE_WARMUP_S)


def test_the_scenarios_startup_and_a_measured_start_win_over_the_model() -> None:
    assert modelled_start_s(scenario(startup_s=2.5), TP1) == 2.5
    start = start_seconds(scenario(), {"b": 41.0})
    assert start(TP2) == 41.0 and start(TP1) == modelled_start_s(scenario(), TP1)
