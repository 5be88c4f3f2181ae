"""`parallax profile` / `parallax calibrate` / `simulate --calibration`: every input kind read into
observations, the fit written as a complete calibration and device spec, and clear errors.

Synthetic measurements come from the simulator itself with known constants, so a correct reader and
fit must give those constants back.
"""

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app
from deployments.catalog.gpus import GPUS, GpuSpec
from deployments.catalog.models import LLAMA_3_1_8B, ModelSpec, model_from_hf_config
from deployments.engines.sim.calibrate import BenchContext, calibrate, gather
from deployments.engines.sim.calibration import FAMILIES, Calibration, FamilyConstants, load_calibration
from deployments.engines.sim.measurements import Metric, Setup, predict_all
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.run_folder import read_run_folder
from deployments.engines.sim.sweep import simulate_scenario
from deployments.engines.sim.vllm_bench import read_vllm_bench
from deployments.resolve import parse_scenario
from schema.deployment import EngineConfig
from schema.dtypes import Dtype

runner = CliRunner()
TINY_CONFIG = {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 4096}
ENGINE = {"kind": "vllm", "max_num_seqs": 32, "max_num_batched_tokens": 2048, "block_size": 32}


def tiny_model(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    return folder


def write_run(folder: Path, model: ModelSpec, model_ref: str, gpu: GpuSpec, constants: FamilyConstants,
              loads: tuple[int, ...] = (1, 4), kind: str = "vllm") -> Path:
    """A run folder whose server timings are what the simulator predicts with `constants`: closed loops
    of each concurrency in turn, prompts of varied lengths, 24 output tokens."""
    folder.mkdir(parents=True)
    scenario = {"name": "synthetic", "model": model_ref, "dtype": "fp32", "hardware": {"gpu": "h100-sxm"},
                "engine": {**ENGINE, "kind": kind}, "configurations": [{"name": "tp1"}]}
    (folder / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    cal = Calibration(families={**FAMILIES, gpu.family: constants})
    factory = ReplicaFactory(model, gpu, Dtype.fp32, Dtype.fp32, 1, 1, EngineConfig(**ENGINE), cal)
    rows, t = [], 1000.0
    for step, c in enumerate(loads):
        reqs = [RequestSpec(40 + 37 * (i % 9), 24) for i in range(6 * c)]
        for i, r in enumerate(run_offline(factory, reqs, concurrency=c).records):
            rows.append({"request_id": f"{step}-{i}", "sla_class": "chat", "config": "tp1", "model": "tp1",
                         "rate_step": step, "offered_rate": None, "concurrency": c, "scheduled_time": t + r.arrival,
                         "send_time": t + r.arrival, "prompt_tokens": r.prompt_len, "planned_prompt_tokens":
                         r.prompt_len, "output_tokens": r.output_len, "max_tokens": 24, "status": "ok",
                         "ttft_s": r.ttft + 0.02, "server_ttft_s": r.ttft, "server_tpot_s": r.tpot})
        t += 1000.0
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


HOST = {"host_prefill_ms": 31.0, "host_decode_ms": 6.5, "host_per_seq_us": 900.0}


def test_run_folder_calibration_recovers_the_host_times(tmp_path: Path) -> None:
    gpu = GPUS["h100-sxm"]
    truth = FAMILIES["hopper"].model_copy(update=HOST)
    model = model_from_hf_config(tiny_model(tmp_path))
    run = write_run(tmp_path / "run", model, str(tmp_path / "tiny"), gpu, truth)
    read = read_run_folder(run, gpu)
    assert [o.metric for o in read.observations] == [Metric.ttft_median_s, Metric.tpot_median_s] * 2
    assert "c=4 (24 requests" in read.observations[2].label
    result, _ = calibrate(gather([run], gpu))
    for name, value in HOST.items():
        assert getattr(result.constants, name) == pytest.approx(value, rel=0.01), name
    assert result.median_error() < 0.001


def test_a_run_of_the_simulated_engine_is_not_a_measurement(tmp_path: Path) -> None:
    model = model_from_hf_config(tiny_model(tmp_path))
    run = write_run(tmp_path / "run", model, str(tmp_path / "tiny"), GPUS["h100-sxm"], FAMILIES["hopper"],
                    kind="sim")
    with pytest.raises(ValueError, match=r"engine.kind is sim: its timings come from the simulator itself"):
        read_run_folder(run, GPUS["h100-sxm"])


def test_a_run_folder_whose_model_moved_asks_for_it(tmp_path: Path) -> None:
    model = model_from_hf_config(tiny_model(tmp_path))
    run = write_run(tmp_path / "run", model, "../moved/tiny", GPUS["h100-sxm"], FAMILIES["hopper"])
    with pytest.raises(ValueError, match=r"cannot be found from the run folder.*give the model with --model"):
        read_run_folder(run, GPUS["h100-sxm"])
    assert read_run_folder(run, GPUS["h100-sxm"], model).observations


def _serve_json(truth: FamilyConstants, setup: Setup) -> dict[str, object]:
    """What `vllm bench serve --max-concurrency 8 --save-detailed` writes, with the simulator as server."""
    reqs = [RequestSpec(300 + 50 * (i % 5), 64) for i in range(32)]
    cal = Calibration(families={**FAMILIES, "hopper": truth})
    res = run_offline(setup.factory(cal), reqs, concurrency=8)
    ttft = sorted(r.ttft for r in res.records)
    tpot = sorted(r.tpot for r in res.records)
    return {"date": "20261127-101010", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B", "num_prompts": 32,
            "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 8, "duration": res.makespan,
            "completed": 32, "total_input_tokens": sum(r.prompt_len for r in reqs), "total_output_tokens": 32 * 64,
            "output_throughput": 32 * 64 / res.makespan, "median_ttft_ms": (ttft[15] + ttft[16]) / 2 * 1e3,
            "median_tpot_ms": (tpot[15] + tpot[16]) / 2 * 1e3, "input_lens": [r.prompt_len for r in reqs],
            "output_lens": [64] * 32, "tp": 1}


def test_vllm_bench_serve_results_are_predicted_request_by_request(tmp_path: Path) -> None:
    setup = Setup(LLAMA_3_1_8B, GPUS["h100-sxm"], Dtype.bf16, Dtype.bf16)
    truth = FAMILIES["hopper"].model_copy(update={"host_decode_ms": 3.0})
    f = tmp_path / "serve.json"
    f.write_text(json.dumps(_serve_json(truth, setup)))
    obs = read_vllm_bench(f, setup)
    assert [o.metric for o in obs] == [Metric.ttft_median_s, Metric.tpot_median_s, Metric.output_tokens_per_s]
    predicted = predict_all(obs, Calibration(families={**FAMILIES, "hopper": truth}))
    assert predicted == pytest.approx([o.measured for o in obs], rel=1e-9)
    # The defaults (host_decode_ms 2 ms) predict faster decoding than the 3 ms server measured.
    assert predict_all(obs[1:2], Calibration())[0] < obs[1].measured


def test_vllm_bench_latency_needs_the_batch_it_timed(tmp_path: Path) -> None:
    f = tmp_path / "latency.json"
    f.write_text(json.dumps({"avg_latency": 1.5, "latencies": [1.5], "percentiles": {}}))
    ctx = BenchContext(model=LLAMA_3_1_8B)
    with pytest.raises(ValueError, match=r"does not record input_len, output_len, batch_size; add them"):
        gather([f], GPUS["h100-sxm"], ctx)
    f.write_text(json.dumps({"avg_latency": 1.5, "input_len": 128, "output_len": 128, "batch_size": 8}))
    (o,) = gather([f], GPUS["h100-sxm"], ctx).observations
    assert o.metric == Metric.makespan_s and o.measured == 1.5 and "batch 8 × 128/128" in o.label


CSV = """model,gpu,dtype,kv_dtype,tp,isl,osl,load,concurrency,metric,value,source
llama-3.1-8b,h100-sxm,fp8,fp8,1,128,128,max-throughput,,output_tokens_per_s,28312,TRT-LLM
llama-3.1-8b,h100-sxm,fp8,fp8,1,2048,128,max-throughput,,output_tokens_per_s,3450,TRT-LLM
llama-3.1-8b,h100-sxm,fp8,fp8,1,500,2000,max-throughput,,output_tokens_per_s,17660,TRT-LLM
llama-3.1-70b,h100-sxm,fp8,fp8,2,5000,500,concurrency,1,ttft_ms,406.8,NIM
llama-3.1-70b,h100-sxm,fp8,fp8,2,5000,500,concurrency,1,itl_ms,18.6,NIM
"""


def test_calibrate_a_published_csv_from_the_command_line(tmp_path: Path) -> None:
    f = tmp_path / "points.csv"
    f.write_text(CSV)
    out = tmp_path / "cal.yaml"
    res = runner.invoke(app, ["calibrate", str(f), "--free", "gemm_flops_fraction,hbm_fraction", "-o", str(out)])
    assert res.exit_code == 0, res.output
    before = FAMILIES["hopper"].gemm_flops_fraction
    assert "leave-one-out" in res.output and f"gemm_flops_fraction {before:.4g} →" in res.output
    cal = load_calibration(out)
    written = yaml.safe_load(out.read_text())["families"]["hopper"]
    assert set(written) == set(FamilyConstants.model_fields)       # complete, not a partial override
    assert cal.families["hopper"].hbm_fraction == pytest.approx(written["hbm_fraction"])


@pytest.mark.parametrize(("rows", "message"), [
    ("model,gpu,dtype,isl,osl,load,metric,value\nllama-3.1-8b,h100-sxm,fp8,128,128,concurrency,ttft_ms,40\n",
     r"row 1: .*load: concurrency needs `concurrency`"),
    ("model,gpu,dtype,isl,osl,load,metric,value\nllama-3.1-8b,h100-sxm,fp8,128,128,max-throughput,tok_s,40\n",
     r"row 1: metric: Input should be"),
    ("model,gpu,dtype,isl,osl,load,metric,value\nllama-9b,h100-sxm,fp8,128,128,max-throughput,"
     "output_tokens_per_s,40\n", r"row 1: unknown model 'llama-9b'"),
])
def test_bad_published_rows_name_the_row_and_field(tmp_path: Path, rows: str, message: str) -> None:
    f = tmp_path / "points.csv"
    f.write_text(rows)
    res = runner.invoke(app, ["calibrate", str(f)])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert str(f) in res.output.replace("\n", "")
    assert re.search(message, " ".join(res.output.split())), res.output


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "notes.txt", "unknown input; give a profile"),
    (lambda p: p, "a folder without records.jsonl"),
    (lambda p: p / "absent.yaml", "no such file"),
])
def test_inputs_that_are_not_measurements_are_refused(tmp_path: Path, make: Callable[[Path], Path],
                                                      message: str) -> None:
    path = make(tmp_path)
    if path.suffix == ".txt":
        path.write_text("hello")
    res = runner.invoke(app, ["calibrate", str(path), "--gpu", "h100-sxm"])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


def test_an_ill_posed_fit_says_which_measurement_to_add(tmp_path: Path) -> None:
    model = model_from_hf_config(tiny_model(tmp_path))
    run = write_run(tmp_path / "run", model, str(tmp_path / "tiny"), GPUS["h100-sxm"], FAMILIES["hopper"],
                    loads=(2,))
    res = runner.invoke(app, ["calibrate", str(run), "--gpu", "h100-sxm"])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "2 measurement(s) for 3 free constants" in text and "TPOT at a second concurrency" in text


def test_simulate_uses_a_calibration_file(tmp_path: Path) -> None:
    f = tmp_path / "cal.yaml"
    f.write_text("families:\n  hopper:\n    host_decode_ms: 12.0\n")
    args = ["simulate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--input-len", "128", "--output-len", "32",
            "--concurrency", "1", "--num-requests", "4", "--json"]
    base = json.loads(runner.invoke(app, args).stdout)
    slow = json.loads(runner.invoke(app, [*args, "--calibration", str(f)]).stdout)
    assert slow["tpot_ms"]["mean"] - base["tpot_ms"]["mean"] == pytest.approx(10.0, abs=0.5)
    bad = runner.invoke(app, [*args, "--calibration", str(tmp_path / "absent.yaml")])
    assert bad.exit_code == 2 and "no such file; give a calibration YAML file" in bad.output


def test_profile_then_calibrate_then_simulate_on_this_cpu(tmp_path: Path) -> None:
    """The whole path a user with one device takes, on the CPU with tiny shapes."""
    pytest.importorskip("torch")
    model_dir = tiny_model(tmp_path)
    prof = tmp_path / "profile.yaml"
    res = runner.invoke(app, ["profile", "--model", str(model_dir), "--dtype", "fp32", "--device", "cpu",
                              "--tokens", "1,16,64,256", "--contexts", "64,256", "--decode-batches", "1,4",
                              "--repeats", "3", "--threads", "1", "-o", str(prof)])
    assert res.exit_code == 0, res.output
    profile = yaml.safe_load(prof.read_text())
    assert profile["device_from"] == "measured" and profile["device"]["family"] == "cpu"
    ops = {r["op"] for r in profile["records"]}
    assert ops == {"gemm", "prefill_attention", "decode_attention", "stream"}
    assert set(profile["fitted"]) == {"gemm_flops_fraction", "gemm_m_half", "hbm_fraction", "attn_flops_fraction",
                                      "attn_hbm_fraction"}
    # The serving side: a vLLM-served run on this device whose host times are known.
    device = GpuSpec.model_validate(profile["device"])
    truth = FAMILIES["hopper"].model_copy(update={**profile["fitted"], **HOST})
    run = write_run(tmp_path / "run", model_from_hf_config(model_dir), str(model_dir), device, truth)
    cal, spec = tmp_path / "cal.yaml", tmp_path / "cpu.yaml"
    res = runner.invoke(app, ["calibrate", str(prof), str(run), "--family", "cpu-box", "-o", str(cal),
                              "--device-spec-out", str(spec)])
    assert res.exit_code == 0, res.output
    fitted = load_calibration(cal).families["cpu-box"]
    for name, value in HOST.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=0.02), name
    assert yaml.safe_load(spec.read_text())["family"] == "cpu-box"
    res = runner.invoke(app, ["simulate", "--model", str(model_dir), "--gpu", str(spec), "--dtype", "fp32",
                              "--calibration", str(cal), "--input-len", "200", "--output-len", "24",
                              "--concurrency", "1", "--num-requests", "3", "--json"])
    assert res.exit_code == 0, res.output
    tpot_ms = json.loads(res.stdout)["tpot_ms"]["mean"]
    assert tpot_ms > HOST["host_decode_ms"]     # a decode step on this CPU costs at least its host time
    # A scenario takes both: the device spec as its GPU, the calibration as its engine's.
    scenario = {"name": "on-this-cpu", "model": str(model_dir), "dtype": "fp32", "hardware": {"gpu": spec.name},
                "engine": {"kind": "sim", "calibration": cal.name}, "configurations": [{"name": "tp1"}],
                "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500},
                             "input": {"kind": "fixed", "value": 200}, "output": {"kind": "fixed", "value": 24}}]}
    resolved = parse_scenario(scenario, str(tmp_path / "on-this-cpu.yaml"), tmp_path)
    assert resolved.gpu.family == "cpu-box"
    points = simulate_scenario(resolved, rates=[1.0])
    assert points[0].summary["tpot_ms"]["mean"] > HOST["host_decode_ms"]


def test_a_profiled_gpu_is_its_catalog_entry_only_when_it_is_that_part() -> None:
    pytest.importorskip("torch")
    from deployments.engines.sim.profiler import catalog_gpu  # torch is an optional dependency

    assert catalog_gpu("NVIDIA H100 80GB HBM3") is GPUS["h100-sxm"]
    assert catalog_gpu("AMD Instinct MI300X") is GPUS["mi300x"]
    assert catalog_gpu("NVIDIA H100 PCIe") is None          # other bandwidth and power than the SXM entry
    assert catalog_gpu("AMD EPYC 9R14") is None
