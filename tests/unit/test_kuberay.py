"""`parallax kuberay`: the RayService manifest, checked structurally."""

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve import Application
from typer.testing import CliRunner

from controllers.cli.app import app as cli
from deployments.app import INGRESS_CPUS, REPLICA_CPUS
from deployments.app_args import AppArgs
from deployments.kuberay import default_sizes, rayservice_manifest, to_yaml
from deployments.resolve import Resolved, load_scenario, parse_scenario

SCENARIOS = sorted(Path(__file__).resolve().parents[2].joinpath("scenarios").glob("*.yaml"))
NVIDIA: dict[str, Any] = {
    "name": "Chat_H100", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2},
    "configurations": [{"name": "tp4", "tp": 4, "replicas": 2}, {"name": "tp2pp4", "tp": 2, "pp": 4,
                                                                  "spread_pp_over_nodes": True}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 450},
                 "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 20}}],
    "server": {"api_key_env": "PARALLAX_TEST_KEY", "metrics_port": 9311},
}


def resolved_cases() -> list[Resolved]:
    """Every shipped scenario that deploys something (a planning scenario has no configurations yet)."""
    shipped = [load_scenario(p, need_configurations=False) for p in SCENARIOS]
    return [r for r in shipped if r.scenario.configurations] + [parse_scenario(NVIDIA, "chat.yaml")]


def manifest_of(r: Resolved) -> dict[str, Any]:
    head, worker = default_sizes(r)
    data = yaml.safe_load(to_yaml(rayservice_manifest(r, "example/parallax:1", head, worker)))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("r", resolved_cases(), ids=lambda r: r.scenario.name)
def test_manifest_structure_and_resource_sums(r: Resolved) -> None:
    m = manifest_of(r)
    s = r.scenario
    assert (m["apiVersion"], m["kind"]) == ("ray.io/v1", "RayService")
    name = m["metadata"]["name"]
    assert len(name) <= 63 and name.replace("-", "").isalnum() and name == name.lower()
    cluster = m["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["authOptions"] == {"mode": "token"}  # Ray's token authentication on every node
    head = cluster["headGroupSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    (head_c,) = head["template"]["spec"]["containers"]
    (worker_c,) = workers["template"]["spec"]["containers"]
    vendor = "amd.com/gpu" if r.gpu.name.startswith("mi") else "nvidia.com/gpu"
    gpu_keys = {k for k in worker_c["resources"]["limits"] if k.endswith("/gpu")}
    assert gpu_keys == {vendor}
    assert not any(k.endswith("/gpu") for k in head_c["resources"]["limits"])
    assert head["rayStartParams"]["num-gpus"] == "0"
    per_node = worker_c["resources"]["limits"][vendor]
    assert per_node == s.hardware.gpus_per_node == int(workers["rayStartParams"]["num-gpus"])
    assert worker_c["resources"]["requests"] == worker_c["resources"]["limits"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == s.hardware.nodes
    assert workers["replicas"] * per_node == s.hardware.total_gpus >= sum(c.gpus for c in s.configurations)
    # CPUs: a replica actor per GPU at most on a worker; the ingress fits on the head
    assert int(worker_c["resources"]["limits"]["cpu"]) >= per_node * REPLICA_CPUS
    assert int(head_c["resources"]["limits"]["cpu"]) >= INGRESS_CPUS
    # metrics: one port, exported by Ray, exposed and annotated for Prometheus on every pod
    port = s.server.metrics_port
    for group, c in ((head, head_c), (workers, worker_c)):
        assert group["rayStartParams"]["metrics-export-port"] == str(port)
        ann = group["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(port)
        assert {"name": "metrics", "containerPort": port} in c["ports"]
    assert {"name": "serve", "containerPort": 8000} in head_c["ports"]


@pytest.mark.parametrize("r", resolved_cases(), ids=lambda r: r.scenario.name)
def test_serve_config_names_an_importable_app_of_this_scenario(r: Resolved) -> None:
    serve_cfg = yaml.safe_load(manifest_of(r)["spec"]["serveConfigV2"])
    assert serve_cfg["http_options"] == {"host": "0.0.0.0", "port": 8000}  # reachable through the Service
    front, *configs = serve_cfg["applications"]   # the ingress and store, then one per configuration
    assert [c["name"] for c in configs] == [f"parallax-{c.name}" for c in r.scenario.configurations]
    for app in (front, *configs):
        module, _, attr = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), attr)
        args = AppArgs.model_validate({k: v for k, v in app["args"].items() if k != "config"})
        assert args.base_dir == str(Path(r.source).parent.resolve())  # relative files: same path on the pods
        # the pods' clients come through the Service to Serve's proxy: no direct ingress ports
        no_direct = r.scenario.server.model_copy(update={"direct_ingress": False})
        assert args.resolve().scenario == r.scenario.model_copy(update={"server": no_direct})
        assert isinstance(builder(app["args"]), Application)


def test_api_key_comes_from_a_secret_never_the_manifest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = "sk-test-7f3a9c1e5b"
    monkeypatch.setenv("PARALLAX_TEST_KEY", secret)
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump(NVIDIA))
    out = tmp_path / "rs.yaml"
    result = CliRunner().invoke(cli, ["kuberay", str(path), "--image", "example/parallax:1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert secret not in text and secret not in result.output
    m = yaml.safe_load(text)
    for group in (m["spec"]["rayClusterConfig"]["headGroupSpec"], m["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]):
        (env,) = group["template"]["spec"]["containers"][0]["env"]
        assert env == {"name": "PARALLAX_TEST_KEY",
                       "valueFrom": {"secretKeyRef": {"name": "parallax-chat-h100-api-key", "key": "api-key"}}}


def test_bad_scenario_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**NVIDIA, "hardware": {"gpu": "h100-sxm", "nodes": 0}}))
    result = CliRunner().invoke(cli, ["kuberay", str(path), "--image", "x"])
    assert result.exit_code == 2
    assert "hardware.nodes" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("r", resolved_cases(), ids=lambda r: r.scenario.name)
def test_every_pod_has_a_memory_backed_dev_shm(r: Resolved) -> None:
    """A container's /dev/shm is 64 MiB; Ray's object store, NCCL and vLLM's message queues need more."""
    cluster = manifest_of(r)["spec"]["rayClusterConfig"]
    for group in (cluster["headGroupSpec"], cluster["workerGroupSpecs"][0]):
        pod = group["template"]["spec"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


def test_vllm_gpu_pods_read_the_hub_token_from_an_optional_secret() -> None:
    r = load_scenario(next(p for p in SCENARIOS if p.name == "llama70b-h100-vllm.yaml"))
    cluster = manifest_of(r)["spec"]["rayClusterConfig"]
    (env,) = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    assert env == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "parallax-llama70b-h100-vllm-hf-token", "key": "token", "optional": True}}}
    assert "env" not in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]   # no model on the head
