"""Multi-node placement on a real two-node Ray cluster (head + worker started with `ray start`, 4 logical
GPUs each), attached through RAY_ADDRESS: configurations land on the nodes the placement rules promise."""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import ray
from ray import serve

from controllers.scenario import parse_scenario
from deployments.app_args import APP_NAME
from deployments.config import ParallelConfig
from deployments.deploy import deploy
from deployments.placement import PlacementError, gpu_nodes, plan_nodes, replica_placement
from tests.integration.ray_cluster import LocalCluster, driver_env, free_port, local_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(head_gpus=4) as c:
        c.add_node("b", gpus=4)
        with driver_env(c):
            ray.init(logging_level="ERROR")  # no address: attaches to the cluster RAY_ADDRESS names
            try:
                c.serve_port = free_port()  # type: ignore[attr-defined]
                serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": c.serve_port})
                yield c
            finally:
                serve.shutdown()
                ray.shutdown()
    assert not c.running_pids(), "the cluster's processes must all be gone"


def teardown_app() -> None:
    serve.delete(APP_NAME)


@serve.deployment
class Probe:
    """Stands in for an LLMServer replica: holds the placement group a configuration asks for."""

    def __call__(self) -> str:
        return "ok"


def node_names() -> dict[str, str]:
    """Ray node id → the name its `parallax_node_<name>` resource gives it."""
    out = {}
    for n in ray.nodes():
        for res in n["Resources"]:
            if n["Alive"] and res.startswith("parallax_node_"):
                out[n["NodeID"]] = res.removeprefix("parallax_node_")
    return out


def deploy_probe(cfg: ParallelConfig) -> list[list[str]]:
    """Deploy `cfg` as a Serve app; the node name of every bundle of every replica's placement group."""
    p = replica_placement(cfg, 0.1)
    app = Probe.options(name=cfg.name, num_replicas=cfg.replicas, ray_actor_options={"num_cpus": p.bundles[0]["CPU"]},
                        **p.as_deployment_options()).bind()
    serve.run(app, name=cfg.name, route_prefix=f"/{cfg.name}")
    names = node_names()
    groups: list[list[str]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tables: dict[str, Any] = ray.util.placement_group_table()
        groups = [[names[t["bundles_to_node_id"][i]] for i in sorted(t["bundles"])]
                  for t in tables.values() if t["state"] == "CREATED" and cfg.name in t["name"]]
        if len(groups) == cfg.replicas:
            break
        time.sleep(0.2)
    return groups


def test_attaches_to_the_cluster_and_sees_both_nodes(cluster: LocalCluster) -> None:
    # Ray reports the GCS under the host's own IP; the port says it is our head
    assert ray.get_runtime_context().gcs_address.rsplit(":", 1)[1] == cluster.address.rsplit(":", 1)[1]
    nodes = gpu_nodes(ray.nodes())
    assert sorted(n.gpus for n in nodes) == [4, 4]
    assert sorted(node_names().values()) == ["b", "head"]


def test_whole_replicas_land_on_one_node_each(cluster: LocalCluster) -> None:
    cfg = ParallelConfig(name="tp2pp2", tp=2, pp=2, replicas=2)
    assert plan_nodes([cfg], gpu_nodes(ray.nodes()))
    groups = deploy_probe(cfg)
    try:
        assert len(groups) == 2
        assert all(len(g) == 4 and len(set(g)) == 1 for g in groups), groups  # TP and PP inside a node
        assert {g[0] for g in groups} == {"head", "b"}
    finally:
        serve.delete(cfg.name)


def test_spread_pipeline_stages_span_nodes_with_tp_inside_each(cluster: LocalCluster) -> None:
    cfg = ParallelConfig(name="tp2pp4", tp=2, pp=4, spread_pp_over_nodes=True)
    plan = plan_nodes([cfg], gpu_nodes(ray.nodes()))
    assert len(set(plan["tp2pp4"][0])) == 2
    groups = deploy_probe(cfg)
    try:
        (stages,) = groups  # one bundle of tp GPUs per stage: a TP group never leaves its node
        assert sorted(stages) == ["b", "b", "head", "head"]
    finally:
        serve.delete(cfg.name)


def test_a_replica_no_node_can_hold_is_refused_before_deploying(cluster: LocalCluster) -> None:
    with pytest.raises(PlacementError, match="needs 8 GPUs on one node but the largest node has 4"):
        plan_nodes([ParallelConfig(name="tp2pp4", tp=2, pp=4)], gpu_nodes(ray.nodes()))


def test_the_real_app_places_configurations_across_nodes(cluster: LocalCluster) -> None:
    """The scenario's LLMServer deployments (sim engine) on the two nodes, through deployments.deploy."""
    r = parse_scenario({
        "name": "two-nodes", "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 2},
        "configurations": [{"name": "whole", "tp": 2},
                           {"name": "spread", "tp": 2, "pp": 3, "spread_pp_over_nodes": True}],
        "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 1000},
                     "input": {"kind": "fixed", "value": 16}, "output": {"kind": "fixed", "value": 4}}],
    }, "two-nodes.yaml")
    port: int = cluster.serve_port  # type: ignore[attr-defined]
    d = deploy(r, port=port, timeout_s=180)
    try:
        names = node_names()
        (whole,) = d.placements["whole"]
        (spread,) = d.placements["spread"]
        assert whole.strategy == "STRICT_PACK" and len({names[n] for n in whole.nodes}) == 1
        assert spread.strategy == "PACK" and [b["GPU"] for b in spread.bundles] == [2, 2, 2]
        assert sorted(names[n] for n in spread.nodes) in (["b", "b", "head"], ["b", "head", "head"])
        resp = httpx.post(f"{d.url}/v1/completions", json={"model": "spread", "prompt": "hello there", "max_tokens": 4},
                          headers={"x-sla-class": "chat"}, timeout=60)
        assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 4
    finally:
        teardown_app()
