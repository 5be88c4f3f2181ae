"""The calibration loop closed on this machine: real vLLM (CPU build, the tiny Llama) serves closed
loops of 1, 4, 2 and 3 users (interleaved three times, so a drifting shared machine weighs on every
load alike) → a run folder → `parallax profile` of this CPU + `parallax calibrate` on the 1-, 2- and
4-user loads → a calibration and a device spec for this CPU → the simulator predicts the server's own
median TTFT and TPOT at 3 users, a load it was not fitted on, within 20 %.

On two cores the engine shares the CPU with the testbed's relay of every token, so its step time
grows faster from 1 to 2 users than from 2 to 4 (the simulator's host cost is linear in the batch):
fitted on 1 and 4 users alone, the 2-user TPOT came out 4-21 % low from run to run.

Timings are the server's own (engine clock, per request; medians), not the client's.
"""

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import ray
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app
from deployments.catalog.gpus import gpu_from_yaml
from deployments.cluster import start_local_ray
from deployments.deploy import deploy, teardown
from deployments.engines.sim.calibration import load_calibration
from deployments.engines.sim.measurements import Metric, predict_all
from deployments.engines.sim.run_folder import read_run_folder
from deployments.engines.vllm.tiny_model import write_tiny_model
from deployments.resolve import parse_scenario
from loadgen.runner import run_load
from monitoring.ports import free_port
from schema.traffic import LoadConfig
from tests.support.vllm_tier import TINY_MODEL, Residue, set_cache_env

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

FIT_LOADS, HELD_OUT = (1, 2, 4), 3
SCENARIO = {
    "name": "cpu-calibration-loop",
    "model": str(TINY_MODEL),
    "dtype": "fp32",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 8},   # logical: the calibrated device is the profiled CPU
    "engine": {"kind": "vllm", "model_path": str(TINY_MODEL), "max_num_seqs": 32, "max_num_batched_tokens": 2048,
               "max_model_len": 2048, "block_size": 32, "stream_interval_ms": 20},
    "configurations": [{"name": "tp1"}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500, "tpot_ms": 50},
                 "input": {"kind": "uniform", "min": 32, "max": 512}, "output": {"kind": "fixed", "value": 32}}],
    "load": {"arrival": {"kind": "closed", "concurrency": 1}, "rates": [1, 4, 2, 3] * 3, "duration_s": 5,
             "timeout_s": 60},
}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of real vLLM at the scenario's interleaved loads; nothing left running."""
    set_cache_env()
    write_tiny_model(TINY_MODEL)
    folder = tmp_path_factory.mktemp("run")
    resolved = parse_scenario(SCENARIO, "calibration-loop", folder)
    s = resolved.scenario
    (folder / "scenario.yaml").write_text(yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False))
    before = Residue.now()
    temp = Path(tempfile.mkdtemp(prefix="pxl"))
    try:
        start_local_ray(resolved, temp, metrics_port=free_port())
        d = deploy(resolved, port=free_port(), timeout_s=400)
        load = LoadConfig.model_validate(SCENARIO["load"])
        asyncio.run(run_load(d.url, list(s.classes), load, folder, model="tp1", tokenizer=TINY_MODEL))
    finally:
        teardown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    left = Residue.now().new_since(before)
    assert not left.processes and not left.files, f"left behind: {left}"
    return folder


def test_calibrated_simulator_predicts_vllm_at_another_load(run_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    profile = tmp_path / "profile.yaml"
    res = runner.invoke(app, ["profile", "--model", str(TINY_MODEL), "--dtype", "fp32", "--device", "cpu",
                              "--tokens", "1,4,16,64,256,1024", "--contexts", "128,512", "--decode-batches", "1,8",
                              "--repeats", "5", "--threads", "1", "-o", str(profile)])
    assert res.exit_code == 0, res.output
    # Calibrate on the 1-, 2- and 4-user loads only.
    fit_folder = tmp_path / "fit-loads"
    fit_folder.mkdir()
    shutil.copy(run_folder / "scenario.yaml", fit_folder)
    rows = [json.loads(line) for line in (run_folder / "records.jsonl").read_text().splitlines()]
    (fit_folder / "records.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows if r["concurrency"] in FIT_LOADS))
    cal, spec = tmp_path / "cal.yaml", tmp_path / "this-cpu.yaml"
    res = runner.invoke(app, ["calibrate", str(profile), str(fit_folder), "--family", "this-cpu", "-o", str(cal),
                              "--device-spec-out", str(spec)])
    assert res.exit_code == 0, res.output
    print(res.output)
    # The held-out load, predicted by the simulator with the calibration on the calibrated device.
    device = gpu_from_yaml(spec)
    held = [o for o in read_run_folder(run_folder, device).observations if f"c={HELD_OUT} " in o.label]
    assert {o.metric for o in held} == {Metric.ttft_median_s, Metric.tpot_median_s}
    for o, predicted in zip(held, predict_all(held, load_calibration(cal)), strict=True):
        print(f"{o.label}: measured {o.measured * 1e3:.1f} ms, predicted {predicted * 1e3:.1f} ms "
              f"({predicted / o.measured - 1:+.1%})")
        assert predicted == pytest.approx(o.measured, rel=0.20), o.label
