"""Two ingress replicas share one versioned routing (real local Ray and Serve, simulated engines).

Requests go to each replica's own address (Serve's direct ingress, what the load generator uses) and
through Serve's proxy (what the controller uses)."""

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import ray

from controllers.router_client import HttpRouter
from deployments.app_args import APP_NAME, ROUTING_STORE_NAME
from deployments.deploy import DeployedApp, deployed_locally, ingress_handle
from deployments.resolve import parse_scenario
from tests.support.waiting import wait_until

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
def dep() -> Iterator[DeployedApp]:
    with deployed_locally(parse_scenario(SCENARIO)) as d:
        assert len(d.ingress_urls) == 2 and d.target == ",".join(d.ingress_urls)
        yield d


def served_by(urls: list[str], n: int, sla_class: str) -> tuple[Counter[str], set[str]]:
    """n consecutive requests of `sla_class` to model auto, taking `urls` in turn: configurations that
    served, ingress replicas seen."""
    configs: Counter[str] = Counter()
    replicas = set()
    with httpx.Client(timeout=30) as http:
        for i in range(n):
            r = http.post(f"{urls[i % len(urls)]}/v1/completions", headers={"x-sla-class": sla_class},
                          json={"model": "auto", "prompt": "a b", "max_tokens": 1})
            assert r.status_code == 200, r.text
            configs[r.headers["x-parallax-config"]] += 1
            replicas.add(r.headers["x-parallax-ingress"])
    return configs, replicas


def routings(urls: list[str]) -> dict[str, int]:
    """GET /v1/routing on each address: replica -> the version it answered."""
    out: dict[str, int] = {}
    for url in urls:
        body = httpx.get(f"{url}/v1/routing", timeout=30).json()
        out[body["replica"]] = body["version"]
    return out


def test_a_put_on_one_replica_is_honoured_by_every_replica(dep: DeployedApp) -> None:
    a, b = dep.ingress_urls
    before = routings([a, b])
    assert len(before) == 2 and len(set(before.values())) == 1  # two replicas, one version
    put = httpx.put(f"{b}/v1/routing", json={"weights": {"chat": {"pp8": 1, "tp8": 0}}}, timeout=30)
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["replicas"] == {"applied": 2, "live": 2}
    assert body["version"] == next(iter(before.values())) + 1
    configs, replicas = served_by([a, b], 200, "chat")
    assert configs == {"pp8": 200} and len(replicas) == 2
    other, _ = served_by([a, b], 20, "batch")   # the class not in the update keeps its weights
    assert other == {"tp8": 10, "pp8": 10}
    assert set(routings([a, b]).values()) == {body["version"]}


def test_the_controllers_router_and_the_handle_go_through_the_same_store(dep: DeployedApp) -> None:
    router = HttpRouter(dep.url)   # through Serve's proxy, as `parallax run` does
    try:
        router.set_weights({"chat": {"tp8": 1}})
        configs, replicas = served_by([dep.url], 200, "chat")   # the proxy spreads them over the replicas
        assert configs == {"tp8": 200} and len(replicas) == 2
        out = ingress_handle().set_routing.remote({"chat": {"pp8": 3, "tp8": 1}}).result()
        assert out["replicas"]["applied"] == 2
        configs, _ = served_by(dep.ingress_urls, 40, "chat")
        assert configs == {"pp8": 30, "tp8": 10}
        assert len(set(routings(dep.ingress_urls).values())) == 1
    finally:
        router.close()


def test_a_restarted_store_keeps_the_routing(dep: DeployedApp) -> None:
    with httpx.Client(base_url=dep.url, timeout=30) as http:
        http.put("/v1/routing", json={"weights": {"batch": {"pp8": 1}}}).raise_for_status()
        version = http.get("/v1/routing").json()["version"]
        store = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#{ROUTING_STORE_NAME}#"))
        ray.kill(ray.get_actor(store["name"], namespace=store["namespace"]), no_restart=True)
        answers: list[httpx.Response] = []

        def stored() -> bool:  # Serve starts a new store; the replicas' polls re-seed it with their version
            answers.append(r := http.put("/v1/routing", json={"weights": {"chat": {"tp8": 1}}}))
            assert r.status_code == 200 or r.json()["error"]["code"] == "routing_unavailable", r.text
            return r.status_code == 200

        wait_until(stored, 60, lambda: f"a new routing store to take the PUT (last: {answers[-1].text})", 0.5)
        r = answers[-1]
        assert r.json()["version"] == version + 1
        assert r.json()["weights"]["batch"] == {"pp8": 1.0}
        configs, _ = served_by(dep.ingress_urls, 20, "batch")
        assert configs == {"pp8": 20}
