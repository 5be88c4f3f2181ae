"""Where a scenario runs: the GPUs a local Ray advertises (the machine's own for real vLLM, logical ones for the
simulator), what a local run refuses before starting (naming RAY_ADDRESS), and what a cluster's nodes get."""

import json
from pathlib import Path

import pytest
import ray
from typer.testing import CliRunner

from controllers.cli.app import app as cli
from deployments.cluster import (
    CODE_PACKAGES,
    CapacityError,
    cluster_runtime_env,
    start_local_ray,
)
from deployments.local_gpus import detected_gpus, local_gpus, local_run_problems
from deployments.resolve import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
H100_VLLM = SCENARIOS / "llama70b-h100-vllm.yaml"   # 3 nodes × 8 H100: 24 GPUs of configurations
OVERRIDE = "RAY_OVERRIDE_RESOURCES"   # Ray's own override of what a node has (ResourceAndLabelSpec)


def test_real_vllm_gets_the_machines_gpus_the_simulator_logical_ones() -> None:
    """Bug 3 of issue 26: a 3-node vLLM scenario on one 8-GPU box advertised 24 GPUs."""
    vllm = load_scenario(H100_VLLM)
    assert vllm.scenario.hardware.total_gpus == 24
    assert local_gpus(vllm, detected=8) == 8
    assert local_gpus(vllm, detected=0) == 24   # no GPU here: vLLM's CPU build, its ranks reserved logically
    sim = load_scenario(SCENARIOS / "demo.yaml")
    assert local_gpus(sim, detected=8) == sim.scenario.hardware.total_gpus == 24   # the simulator's logical nodes


def test_ray_finds_the_gpus_ray_start_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE, json.dumps({"GPU": 8}))
    assert detected_gpus() == 8
    monkeypatch.setenv(OVERRIDE, json.dumps({"CPU": 4}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert detected_gpus() == 0   # no device visible to this process


def test_a_local_run_needing_more_gpus_than_the_machine_has_is_refused_before_ray_starts(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(OVERRIDE, json.dumps({"GPU": 8}))
    r = load_scenario(H100_VLLM)
    (problem,) = local_run_problems(r, detected_gpus())
    assert "need 24 GPUs" in problem and "this machine has 8" in problem and "RAY_ADDRESS=" in problem
    try:
        with pytest.raises(CapacityError, match=r"cannot run here: configurations: they need 24 GPUs"):
            start_local_ray(r, tmp_path / "ray")
        assert not ray.is_initialized()
    finally:
        if ray.is_initialized():   # the code before issue 26 started it
            ray.shutdown()


def test_validate_names_ray_address_for_a_scenario_too_big_for_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE, json.dumps({"GPU": 8}))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = CliRunner().invoke(cli, ["validate", str(H100_VLLM)])
    assert local.exit_code == 2, local.output
    assert "this machine has 8" in local.output and "RAY_ADDRESS" in local.output
    assert "Traceback" not in local.output
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")   # a cluster: its GPUs are checked when it deploys
    assert CliRunner().invoke(cli, ["validate", str(H100_VLLM)]).exit_code == 0


def test_a_local_run_needs_its_model_folder_here(tmp_path: Path) -> None:
    text = (SCENARIOS / "cpu-vllm-tiny.yaml").read_text().replace("model_path: ../.cache/tiny-llama",
                                                                  f"model_path: {tmp_path / 'missing'}")
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("model: ../.cache/tiny-llama", "model: llama-3.1-8b"))
    (problem,) = local_run_problems(load_scenario(path), detected=0)
    assert problem.startswith(f"engine.model_path: {tmp_path / 'missing'}: no such folder")


def test_a_cluster_gets_the_code_and_the_hub_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    env = cluster_runtime_env()
    assert [Path(p).name for p in env["py_modules"]] == list(CODE_PACKAGES)
    assert all((Path(p) / "__init__.py").is_file() for p in env["py_modules"])
    assert "env_vars" not in env
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert cluster_runtime_env()["env_vars"] == {"HF_TOKEN": "hf_test_token"}
