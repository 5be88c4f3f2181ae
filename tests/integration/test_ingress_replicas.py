"""Two ingress replicas share one versioned routing (real local Ray and Serve, simulated engines)."""

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray

from controllers.router_client import HttpRouter
from controllers.scenario import parse_scenario
from deployments.app_args import APP_NAME, ROUTING_STORE_NAME
from deployments.cluster import start_local_ray
from deployments.deploy import deploy, ingress_handle, teardown
from monitoring.prometheus import free_port

pytestmark = pytest.mark.integration

SCENARIO = {
    "name": "two-ingress", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 2},
    "engine": {"kind": "sim", "time_scale": 0.2, "max_model_len": 2048},
    "configurations": [{"name": "tp8", "tp": 8}, {"name": "pp8", "pp": 8}],
    "server": {"ingress_replicas": 2},
    "classes": [
        {"name": "chat", "share": 0.5, "slo": {"ttft_ms": 450}, "input": {"kind": "fixed", "value": 8},
         "output": {"kind": "fixed", "value": 1}},
        {"name": "batch", "share": 0.5, "slo": {"ttft_ms": 4000}, "input": {"kind": "fixed", "value": 8},
         "output": {"kind": "fixed", "value": 1}},
    ],
}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="plx-ing-"))
    r = parse_scenario(SCENARIO)
    try:
        start_local_ray(r, folder / "ray", free_port())
        yield deploy(r, port=free_port(), timeout_s=120).url
    finally:
        try:
            teardown()
        finally:
            ray.shutdown()
            shutil.rmtree(folder, ignore_errors=True)


def served_by(http: httpx.Client, n: int, sla_class: str) -> tuple[Counter[str], set[str]]:
    """n consecutive requests of `sla_class` to model auto: configurations that served, ingress replicas seen."""
    configs: Counter[str] = Counter()
    replicas = set()
    for _ in range(n):
        r = http.post("/v1/completions", json={"model": "auto", "prompt": "a b", "max_tokens": 1},
                      headers={"x-sla-class": sla_class})
        assert r.status_code == 200, r.text
        configs[r.headers["x-parallax-config"]] += 1
        replicas.add(r.headers["x-parallax-ingress"])
    return configs, replicas


def routings(http: httpx.Client, n: int = 30) -> dict[str, int]:
    """GET /v1/routing n times: replica -> the version it answered."""
    out: dict[str, int] = {}
    for _ in range(n):
        body = http.get("/v1/routing").json()
        out[body["replica"]] = body["version"]
    return out


def test_a_put_on_one_replica_is_honoured_by_every_replica(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        before = routings(http)
        assert len(before) == 2 and len(set(before.values())) == 1  # two replicas, one version
        put = http.put("/v1/routing", json={"weights": {"chat": {"pp8": 1, "tp8": 0}}})
        assert put.status_code == 200, put.text
        body = put.json()
        assert body["replicas"] == {"applied": 2, "live": 2}
        assert body["version"] == next(iter(before.values())) + 1
        configs, replicas = served_by(http, 200, "chat")
        assert configs == {"pp8": 200} and len(replicas) == 2
        other, _ = served_by(http, 20, "batch")   # the class not in the update keeps its weights
        assert set(other) == {"tp8", "pp8"} and abs(other["tp8"] - 10) <= 2  # within 1 per replica
        assert set(routings(http).values()) == {body["version"]}


def test_the_controllers_router_and_the_handle_go_through_the_same_store(url: str) -> None:
    router = HttpRouter(url)
    try:
        router.set_weights({"chat": {"tp8": 1}})
        with httpx.Client(base_url=url, timeout=30) as http:
            configs, replicas = served_by(http, 200, "chat")
            assert configs == {"tp8": 200} and len(replicas) == 2
            out = ingress_handle().set_routing.remote({"chat": {"pp8": 3, "tp8": 1}}).result()
            assert out["replicas"]["applied"] == 2
            configs, _ = served_by(http, 40, "chat")
            assert set(configs) == {"pp8", "tp8"} and abs(configs["pp8"] - 30) <= 2  # within 1 per replica
            assert len(set(routings(http).values())) == 1
    finally:
        router.close()


def test_a_restarted_store_keeps_the_routing(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        http.put("/v1/routing", json={"weights": {"batch": {"pp8": 1}}}).raise_for_status()
        version = http.get("/v1/routing").json()["version"]
        store = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#{ROUTING_STORE_NAME}#"))
        ray.kill(ray.get_actor(store["name"], namespace=store["namespace"]), no_restart=True)
        deadline = time.monotonic() + 60
        while True:  # Serve starts a new store; the replicas' polls re-seed it with their version
            r = http.put("/v1/routing", json={"weights": {"chat": {"tp8": 1}}})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.json()["error"]["code"] == "routing_unavailable"
            time.sleep(0.5)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version + 1
        assert r.json()["weights"]["batch"] == {"pp8": 1.0}
        configs, _ = served_by(http, 20, "batch")
        assert configs == {"pp8": 20}
