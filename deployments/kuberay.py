"""A KubeRay RayService manifest (apiVersion ray.io/v1) for a scenario.

One head pod (Serve controller and proxy, no GPUs) and one worker group of `hardware.nodes` pods with
`hardware.gpus_per_node` GPUs each (`nvidia.com/gpu` or `amd.com/gpu`), the same Serve config as
`parallax serve-config` in `serveConfigV2`, Ray's metrics port exposed on every pod with Prometheus
scrape annotations. Inside a pod Serve must listen on 0.0.0.0: the Kubernetes Service reaches it on
the pod's IP. An API key, when the scenario asks for one, comes from a Secret, never the manifest; so does
the Hugging Face token of a vLLM scenario's GPU pods (an optional Secret: public models need none).
Every pod mounts a memory-backed /dev/shm: a container's default is 64 MiB, and Ray's object store,
NCCL and vLLM's message queues between its processes need far more (KubeRay's vLLM examples do the same).
"""

import re
from dataclasses import dataclass
from typing import Any

import yaml

from deployments.app import INGRESS_CPUS, REPLICA_CPUS
from deployments.catalog.gpus import GpuSpec
from deployments.resolve import Resolved
from deployments.serve_config import serve_config

RAY_VERSION = "2.60.0"
SERVE_PORT = 8000
API_KEY_SECRET_KEY = "api-key"
HF_TOKEN_SECRET_KEY = "token"
SHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def gpu_resource(gpu: GpuSpec) -> str:
    """The Kubernetes device-plugin resource of a GPU: AMD Instinct (CDNA) or NVIDIA."""
    return "amd.com/gpu" if gpu.family.lower().startswith("cdna") or gpu.name.lower().startswith("mi") \
        else "nvidia.com/gpu"


@dataclass(frozen=True)
class PodSize:
    cpus: int
    memory: str


def dns_name(name: str) -> str:
    """A Kubernetes object name (RFC 1123 label) from a scenario name."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return f"parallax-{out}"[:63].rstrip("-")


def _container(name: str, image: str, size: PodSize, gpus: dict[str, int], ports: dict[str, int],
               env: list[dict[str, Any]]) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(size.cpus), "memory": size.memory, **gpus}
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "ports": [{"name": n, "containerPort": p} for n, p in ports.items()],
        "resources": {"limits": limits, "requests": dict(limits)},
        "volumeMounts": [SHM_MOUNT],
    }
    if env:
        c["env"] = env
    return c


def _pod(annotations: dict[str, str], container: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations},
            "spec": {"containers": [container], "volumes": [SHM_VOLUME]}}


def rayservice_manifest(r: Resolved, image: str, head: PodSize, worker: PodSize,
                        api_key_secret: str | None = None, hf_token_secret: str | None = None) -> dict[str, Any]:
    """The RayService object for scenario `r`; secrets default to `<name>-api-key` / `<name>-hf-token`."""
    s = r.scenario
    metrics_port = s.server.metrics_port
    # Relative paths in the scenario (a model folder, a GPU spec) resolve against its folder on this
    # machine, as for `serve-config`: the image must hold such files at the same absolute path.
    serve_cfg = serve_config(r, host="0.0.0.0", port=SERVE_PORT)
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port),
                   "prometheus.io/path": "/metrics"}
    env: list[dict[str, Any]] = []
    if s.server.api_key_env:
        secret = api_key_secret or f"{dns_name(s.name)}-api-key"
        env.append({"name": s.server.api_key_env,
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": API_KEY_SECRET_KEY}}})
    worker_env = list(env)
    if s.engine.kind == "vllm":  # the model download on every GPU pod (engines/vllm/model_files.py)
        worker_env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": hf_token_secret or f"{dns_name(s.name)}-hf-token", "key": HF_TOKEN_SECRET_KEY,
            "optional": True}}})
    head_ports = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": SERVE_PORT,
                  "metrics": metrics_port}
    worker_ports = {"metrics": metrics_port}
    nodes = s.hardware.nodes
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": dns_name(s.name), "labels": {"app.kubernetes.io/name": "parallax",
                                                          "app.kubernetes.io/instance": dns_name(s.name)}},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_cfg, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                # KubeRay ≥ 1.5.1 generates a token Secret and sets RAY_AUTH_MODE/RAY_AUTH_TOKEN in every pod:
                # the GCS, raylets, dashboard and Serve replicas' gRPC then refuse callers without it.
                "authOptions": {"mode": "token"},
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0",
                                       "metrics-export-port": str(metrics_port)},
                    "template": _pod(annotations, _container("ray-head", image, head, {}, head_ports, env)),
                },
                "workerGroupSpecs": [{
                    "groupName": f"gpu-{dns_name(r.gpu.name).removeprefix('parallax-')}",
                    "replicas": nodes, "minReplicas": nodes, "maxReplicas": nodes,
                    "rayStartParams": {"num-gpus": str(s.hardware.gpus_per_node),
                                       "metrics-export-port": str(metrics_port)},
                    "template": _pod(annotations, _container(
                        "ray-worker", image, worker, {gpu_resource(r.gpu): s.hardware.gpus_per_node}, worker_ports,
                        worker_env)),
                }],
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (serveConfigV2 stays readable), no anchors or aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not any(ln != ln.rstrip() for ln in value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def default_sizes(r: Resolved) -> tuple[PodSize, PodSize]:
    """Head and worker pod sizes: the head holds Serve's controller, proxy and the ingress; each worker
    one CPU per replica actor it may host (at most one per GPU) and two for Ray itself."""
    head = PodSize(cpus=int(r.scenario.server.ingress_replicas * INGRESS_CPUS) + 2, memory="16Gi")
    worker = PodSize(cpus=int(r.scenario.hardware.gpus_per_node * REPLICA_CPUS) + 2,
                     memory=f"{max(32, 16 * r.scenario.hardware.gpus_per_node)}Gi")
    return head, worker
