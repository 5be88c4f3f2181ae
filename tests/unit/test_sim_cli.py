"""`parallax simulate`: JSON contract, modes, determinism, scenario sweep and clear errors."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app

runner = CliRunner()
BASE = ["simulate", "--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--dtype", "fp8", "--tp", "8"]
LATENCY_KEYS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")


def simulate(*args: str) -> dict:
    res = runner.invoke(app, [*BASE, *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_max_throughput_json_contract() -> None:
    out = simulate("--input-len", "512", "--output-len", "64", "--max-throughput", "--num-requests", "300")
    for key in ("output_tokens_per_s", "requests_per_s", "kv_cache_tokens", "max_batch", "breakdown", *LATENCY_KEYS):
        assert key in out
    for key in LATENCY_KEYS:
        d = out[key]
        assert set(d) == {"mean", "p50", "p90", "p99"} and 0 < d["p50"] <= d["p90"] <= d["p99"]
    assert out["max_batch"] == 256                         # the default max_num_seqs binds
    assert out["output_tokens_per_s"] == pytest.approx(out["requests_per_s"] * 64)
    assert sum(out["breakdown"].values()) == pytest.approx(1.0)
    assert out["kv_cache_tokens"] > 1_000_000


def test_static_batch_json_follows_the_studys_formula() -> None:
    out = simulate("--input-len", "1024", "--output-len", "128", "--batch-size", "32")
    assert {"prefill_ms", "decode_step_ms", "e2e_ms", "output_tokens_per_s", "max_batch"} <= out.keys()
    assert out["waves"] == 1 and out["memory_model"] == "vllm"
    assert out["e2e_ms"] == pytest.approx(out["prefill_ms"] + 128 * out["decode_step_ms"], rel=1e-9)
    tps = 32 * 128 / (out["e2e_ms"] / 1e3)
    assert out["output_tokens_per_s"] == pytest.approx(tps, rel=1e-6)


def test_a_batch_beyond_the_kv_cache_runs_in_waves_unless_the_study_memory_model_is_asked() -> None:
    small = ("--input-len", "1024", "--output-len", "64", "--gpu-memory-utilization", "0.3", "--max-num-seqs", "1024")
    fits = simulate(*small, "--batch-size", "64")
    big = fits["max_batch"] + 1
    waves = simulate(*small, "--batch-size", str(big))
    assert waves["waves"] == 2 and waves["e2e_ms"] > fits["e2e_ms"]
    assert "prefill_ms" not in waves and waves["output_tokens_per_s"] == pytest.approx(
        big * 64 / (waves["e2e_ms"] / 1e3))
    study = runner.invoke(app, [*BASE, "--input-len", "1024", "--output-len", "64", "--memory-model", "study",
                                "--batch-size", "100000"])
    assert study.exit_code == 2 and "the largest batch is" in study.output and "study" in study.output


def test_the_study_memory_model_counts_all_hbm() -> None:
    args = ("--input-len", "1024", "--output-len", "64", "--batch-size", "1")
    vllm, study = simulate(*args), simulate(*args, "--memory-model", "study")
    assert study["memory_model"] == "study" and study["kv_cache_tokens"] > 1.1 * vllm["kv_cache_tokens"]
    lower = simulate(*args, "--gpu-memory-utilization", "0.5")
    assert lower["kv_cache_tokens"] < 0.6 * vllm["kv_cache_tokens"]
    both = runner.invoke(app, [*BASE, *args, "--memory-model", "study", "--gpu-memory-utilization", "0.5"])
    assert both.exit_code == 2 and "--gpu-memory-utilization does not apply" in both.output
    bad = runner.invoke(app, [*BASE, *args, "--memory-model", "hbm"])
    assert bad.exit_code == 2 and "--memory-model 'hbm'" in bad.output


def test_replicas_and_seed() -> None:
    args = ("--input-len", "256", "--output-len", "32", "--num-requests", "400")
    one = simulate(*args, "--max-throughput", "--max-num-seqs", "16")
    two = simulate(*args, "--max-throughput", "--max-num-seqs", "16", "--replicas", "2")
    assert two["output_tokens_per_s"] > 1.8 * one["output_tokens_per_s"]
    a = simulate(*args, "--request-rate", "20", "--seed", "1")
    assert a == simulate(*args, "--request-rate", "20", "--seed", "1")
    assert a["ttft_ms"] != simulate(*args, "--request-rate", "20", "--seed", "2")["ttft_ms"]
    assert a["requests_per_s"] == pytest.approx(20, rel=0.15)   # Poisson at 20/s, nowhere near saturation


def test_concurrency_mode_is_a_closed_loop() -> None:
    low = simulate("--input-len", "256", "--output-len", "64", "--concurrency", "1", "--num-requests", "20")
    high = simulate("--input-len", "256", "--output-len", "64", "--concurrency", "32", "--num-requests", "200")
    assert low["max_batch"] == 1
    assert high["max_batch"] == 32
    assert high["output_tokens_per_s"] > 10 * low["output_tokens_per_s"]


@pytest.mark.parametrize(("args", "message"), [
    (["--input-len", "10", "--output-len", "10"], "give exactly one of"),
    (["--input-len", "10", "--output-len", "10", "--max-throughput", "--concurrency", "2"], "got --concurrency"),
    (["--output-len", "10", "--max-throughput"], "missing --input-len"),
    (["--input-len", "10", "--output-len", "10", "--max-throughput", "--pp", "81"], "deeper than"),
    (["--input-len", "200000", "--output-len", "10", "--max-throughput"], "--input-len 200000"),
    (["--input-len", "10", "--output-len", "10", "--max-throughput", "--plot", "x.png"], "give --scenario"),
])
def test_bad_input_gives_a_clear_error(args: list[str], message: str) -> None:
    res = runner.invoke(app, [*BASE, *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_impossible_configurations_are_refused_like_validate() -> None:
    base = ["simulate", "--input-len", "10", "--output-len", "10", "--max-throughput"]
    cases = [
        (["--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--tp", "3"], "does not divide"),
        (["--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--tp", "16"], "TP must stay inside a node"),
        (["--model", "llama-3.1-405b", "--gpu", "h100-sxm", "--tp", "2"], "no room for the KV cache"),
        (["--model", "llama-3.1-70b", "--gpu", "h900"], "unknown GPU"),
        (["--model", "llama-9", "--gpu", "h100-sxm"], "unknown model"),
        (["--model", "llama-3.1-70b", "--gpu", "h100-sxm", "--dtype", "fp9"], "unknown dtype"),
    ]
    for args, message in cases:
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)


def test_scenario_sweep_table_json_and_plot(tmp_path: Path) -> None:
    scenario = {
        "name": "tiny", "model": "llama-3.1-8b", "dtype": "fp8", "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4},
        "configurations": [{"name": "tp2", "tp": 2}, {"name": "dp2", "tp": 1, "replicas": 2}],
        "classes": [
            {"name": "chat", "share": 0.7, "slo": {"ttft_ms": 200, "tpot_ms": 30},
             "input": {"kind": "lognormal", "mean": 200, "sigma": 0.5}, "output": {"kind": "fixed", "value": 32}},
            {"name": "long", "share": 0.3, "slo": {"e2e_ms": 5000},
             "input": {"kind": "uniform", "min": 1000, "max": 3000},
             "output": {"kind": "preset", "name": "short-mix-70b"}},
        ],
        "load": {"arrival": {"kind": "poisson", "rate": 1}, "rates": [2, 8], "duration_s": 10},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(scenario))
    png = tmp_path / "curves.png"
    res = runner.invoke(app, ["simulate", "--scenario", str(path), "--plot", str(png), "--json"])
    assert res.exit_code == 0, res.output
    points = json.loads(res.stdout)
    assert [(p["config"], p["rate"]) for p in points] == [("tp2", 2), ("tp2", 8), ("dp2", 2), ("dp2", 8)]
    for p in points:
        assert set(p["classes"]) == {"chat", "long"}
        assert p["classes"]["chat"]["num_requests"] + p["classes"]["long"]["num_requests"] == p["num_requests"]
        assert p["num_requests"] == p["rate"] * 10
        assert 0 <= p["classes"]["chat"]["slo_attainment"] <= 1
    assert points[1]["output_tokens_per_s"] > points[0]["output_tokens_per_s"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    table = runner.invoke(app, ["simulate", "--scenario", str(path)])
    assert table.exit_code == 0 and "dp2" in table.output


def test_scenario_errors_are_reported_per_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmodel: llama-3.1-70b\nhardware: {gpu: h100-sxm}\nconfigurations: [{name: a, tp: 3}]\n"
                    "classes: [{name: c, share: 1, slo: {ttft_ms: 1}, input: {kind: fixed, value: 5},"
                    " output: {kind: fixed, value: 5}}]\n")
    res = runner.invoke(app, ["simulate", "--scenario", str(path)])
    assert res.exit_code == 2 and "configurations[0].tp" in res.output


def test_scenario_with_an_unsweepable_arrival_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ramp.yaml"
    path.write_text("name: r\nmodel: llama-3.1-8b\nhardware: {gpu: h100-sxm}\nconfigurations: [{name: a}]\n"
                    "classes: [{name: c, share: 1, slo: {ttft_ms: 100}, input: {kind: fixed, value: 5},"
                    " output: {kind: fixed, value: 5}}]\n"
                    "load: {arrival: {kind: ramp, start_rate: 1, end_rate: 5}}\n")
    res = runner.invoke(app, ["simulate", "--scenario", str(path)])
    assert res.exit_code == 2 and "load.arrival" in res.output and "ramp" in res.output


def test_scenario_calibration_file_is_read_next_to_the_scenario(tmp_path: Path) -> None:
    def tpot(extra: str) -> float:
        path = tmp_path / "s.yaml"
        path.write_text("name: s\nmodel: llama-3.1-8b\nhardware: {gpu: h100-sxm}\nconfigurations: [{name: a}]\n"
                        f"engine: {{{extra}}}\n"
                        "classes: [{name: c, share: 1, slo: {ttft_ms: 100}, input: {kind: fixed, value: 50},"
                        " output: {kind: fixed, value: 20}}]\n"
                        "load: {arrival: {kind: poisson, rate: 1}, duration_s: 5}\n")
        res = runner.invoke(app, ["simulate", "--scenario", str(path), "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)[0]["tpot_ms"]["p50"]

    (tmp_path / "slow-host.yaml").write_text("families: {hopper: {host_decode_ms: 20}}\n")
    assert tpot("calibration: slow-host.yaml") > tpot("") + 10
