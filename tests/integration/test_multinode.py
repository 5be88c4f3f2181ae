"""Multi-node placement on a real two-node Ray cluster (head + worker started with `ray start`, 4 logical
GPUs each), attached through RAY_ADDRESS: configurations land on the nodes the placement rules promise,
and the load generator's Ray workers spread over the nodes."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import yaml
from ray import serve

from deployments.app_args import APP_NAME
from deployments.daemon import UpState
from deployments.placement import PlacementError, gpu_nodes, plan_nodes, replica_placement
from loadgen.plan import Workload, build_plan
from loadgen.records import read_records
from loadgen.runner import run_load
from schema.deployment import ParallelConfig
from schema.traffic import SLO, FixedLength, LoadConfig, PoissonArrival, TrafficClass
from tests.integration.ray_cluster import LocalCluster, driver_env, free_port, local_cluster
from tests.integration.sse_server import SSEServer
from tests.support.waiting import wait_until

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

    def created() -> bool:
        nonlocal groups
        tables: dict[str, Any] = ray.util.placement_group_table()
        groups = [[names[t["bundles_to_node_id"][i]] for i in sorted(t["bundles"])]
                  for t in tables.values() if t["state"] == "CREATED" and cfg.name in t["name"]]
        return len(groups) == cfg.replicas

    wait_until(created, 30, f"{cfg.replicas} placement groups of {cfg.name} created")
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
    try:
        groups = deploy_probe(cfg)
        assert len(groups) == 2
        assert all(len(g) == 4 and len(set(g)) == 1 for g in groups), groups  # TP and PP inside a node
        assert {g[0] for g in groups} == {"head", "b"}
    finally:
        serve.delete(cfg.name)


def test_spread_pipeline_stages_span_nodes_with_tp_inside_each(cluster: LocalCluster) -> None:
    cfg = ParallelConfig(name="tp2pp4", tp=2, pp=4, spread_pp_over_nodes=True)
    plan = plan_nodes([cfg], gpu_nodes(ray.nodes()))
    assert len(set(plan["tp2pp4"][0])) == 2
    try:
        (bundles,) = deploy_probe(cfg)  # one GPU bundle per rank, PACKed: a node's 4 GPUs, then the other's
        assert sorted(bundles) == ["b"] * 4 + ["head"] * 4
        assert all(len(set(bundles[k:k + 2])) == 1 for k in range(0, 8, 2))  # each TP group inside a node
    finally:
        serve.delete(cfg.name)


def test_a_replica_no_node_can_hold_is_refused_before_deploying(cluster: LocalCluster) -> None:
    with pytest.raises(PlacementError, match="needs 8 GPUs on one node but the largest node has 4"):
        plan_nodes([ParallelConfig(name="tp2pp4", tp=2, pp=4)], gpu_nodes(ray.nodes()))


def test_parallax_up_attaches_through_ray_address_and_places_across_nodes(cluster: LocalCluster,
                                                                         tmp_path: Path) -> None:
    """`parallax up` in a fresh process, attached to the cluster by RAY_ADDRESS (token auth), deploys the
    scenario's LLMServers (sim engine) where the placement rules say; `parallax down` removes them."""
    scenario = tmp_path / "two-nodes.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "two-nodes", "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 2},
        "configurations": [{"name": "whole", "tp": 2},
                           {"name": "spread", "tp": 2, "pp": 3, "spread_pp_over_nodes": True}],
        "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 1000},
                     "input": {"kind": "fixed", "value": 16}, "output": {"kind": "fixed", "value": 4}}],
    }))
    port: int = cluster.serve_port  # type: ignore[attr-defined]
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "RAY_AUTH_MODE": "token",
           "PARALLAX_STATE_DIR": str(tmp_path / "state")}
    cli = [sys.executable, "-m", "controllers.cli.app"]
    up = subprocess.run([*cli, "up", str(scenario), "--port", str(port), "--timeout", "180"], env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    try:
        st = UpState.read(tmp_path / "state" / "two-nodes.json")
        assert st.mode == "attached" and st.ray_address == cluster.address
        names = node_names()
        (whole,) = st.placements["whole"]
        (spread,) = st.placements["spread"]
        assert whole["strategy"] == "STRICT_PACK" and len({names[n] for n in whole["nodes"]}) == 1
        assert spread["strategy"] == "PACK" and [b["GPU"] for b in spread["bundles"]] == [1] * 6
        assert sorted(names[n] for n in spread["nodes"]) in (["b"] * 2 + ["head"] * 4, ["b"] * 4 + ["head"] * 2)
        resp = httpx.post(f"{st.url}/v1/completions", headers={"x-sla-class": "chat"}, timeout=60,
                          json={"model": "spread", "prompt": "hello there", "max_tokens": 4})
        assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 4
    finally:
        down = subprocess.run([*cli, "down", "two-nodes"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    left = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}")]  # the front's and every configuration's
    assert not left, left


async def test_ray_load_workers_spread_over_the_nodes(cluster: LocalCluster, tmp_path: Path) -> None:
    """`load.workers_on: ray`: one LoadWorker actor per node, the one-process schedule, every record merged."""
    cls = TrafficClass(name="chat", share=1.0, slo=SLO(ttft_ms=2000), input=FixedLength(value=8),
                       output=FixedLength(value=4))
    load = LoadConfig(arrival=PoissonArrival(rate=40), duration_s=1.5, seed=3, workers=2, workers_on="ray")
    planned = {r.request_id for s in build_plan([cls], load, Workload([cls])) for r in s.requests}
    with SSEServer(ttft_s=0.01, itl_s=0.005) as srv:   # on 127.0.0.1: every "node" of this cluster reaches it
        summary = await run_load(srv.url, [cls], load, tmp_path)
        sent = srv.log.count
    records = read_records(tmp_path)
    assert {r.request_id for r in records} == planned and sent == len(records) == summary.sent
    assert all(r.status == "ok" for r in records)
    assert [w.status for w in summary.workers] == ["finished", "finished"]
    names = node_names()
    assert sorted(names[next(n for n in names if n.startswith(w.where.removeprefix("node ")))]
                  for w in summary.workers) == ["b", "head"]
    assert ray.is_initialized()   # the test's own connection is left alone
