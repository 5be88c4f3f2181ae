"""Pure parts of the deployment: placement bundles, capacity check, the Serve config."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.app import REPLICA_CPUS, build_app, build_config_app, ingress_options, server_options
from deployments.app_args import AppArgs
from deployments.cluster import Capacity, capacity_problems
from deployments.placement import replica_placement
from deployments.resolve import load_scenario
from deployments.serve_config import serve_config
from schema.deployment import ParallelConfig

DEMO = Path(__file__).parents[2] / "scenarios" / "demo.yaml"


def test_replica_bundles_hold_tp_times_pp_gpus() -> None:
    c = ParallelConfig(name="tp4pp2", tp=4, pp=2, replicas=2)
    b = replica_placement(c, REPLICA_CPUS).bundles
    assert len(b) == 8 and sum(x["GPU"] for x in b) == 8 and b[0]["CPU"] > 0
    assert replica_placement(c, REPLICA_CPUS).strategy == "STRICT_PACK"
    assert replica_placement(c.model_copy(update={"spread_pp_over_nodes": True}), REPLICA_CPUS).strategy == "PACK"
    r = load_scenario(DEMO)
    opts = server_options(r, r.scenario.configurations[0])
    assert opts["num_replicas"] == 1 and opts["max_queued_requests"] == r.scenario.server.max_queued_requests
    assert ingress_options(r)["num_replicas"] == 1


def test_capacity_problems_name_what_is_short() -> None:
    configs = [ParallelConfig(name="tp8", tp=8), ParallelConfig(name="pp8", pp=8, replicas=2)]
    assert capacity_problems(configs, Capacity(free_gpus=24, free_cpus=8, node_gpus=[8, 8, 8])) == []
    short = capacity_problems(configs, Capacity(free_gpus=16, free_cpus=8, node_gpus=[8, 8]))
    assert len(short) == 1 and "need 24 GPUs (tp8: 8, pp8: 16)" in short[0] and "16 available" in short[0]
    small_nodes = capacity_problems(configs, Capacity(free_gpus=32, free_cpus=8, node_gpus=[4] * 8))
    assert [p.split(":")[0] for p in small_nodes] == ["tp8", "pp8"]
    assert "CPUs" in capacity_problems(configs, Capacity(free_gpus=24, free_cpus=1, node_gpus=[24]))[0]


def test_serve_config_is_valid_and_rebuilds_the_scenario() -> None:
    r = load_scenario(DEMO)
    cfg = yaml.safe_load(yaml.safe_dump(serve_config(r, port=9123)))
    schema = ServeDeploySchema.model_validate(cfg)
    app, *configs = schema.applications
    assert app.import_path == "deployments.app:build_app" and schema.http_options.port == 9123
    assert [(c.name, c.route_prefix, c.external_scaler_enabled) for c in configs] == [
        (f"parallax-{c.name}", None, True) for c in r.scenario.configurations]
    tp8 = build_config_app(configs[0].args)._bound_deployment
    assert tp8.name == "llm-tp8" and tp8.init_args[1]["name"] == "tp8"
    # clients of a `serve deploy` cluster come through Serve's proxy: no ports of the ingress's own
    no_direct = r.scenario.server.model_copy(update={"direct_ingress": False})
    assert AppArgs.model_validate(app.args).resolve().scenario == r.scenario.model_copy(update={"server": no_direct})


def test_one_application_per_configuration_and_the_store_lists_them_live() -> None:
    r = load_scenario(DEMO)
    args = AppArgs.from_resolved(r).model_dump()
    ingress = build_app(args)._bound_deployment
    assert ingress.name == "ingress" and ingress.num_replicas == 1
    store = ingress.init_args[1]._bound_deployment
    assert [c["name"] for c in store.init_args[1]] == ["tp8", "tp4pp2", "pp8"]
    servers = {c: build_config_app(args | {"config": c})._bound_deployment for c in ("tp8", "tp4pp2", "pp8")}
    assert {name: d.name for name, d in servers.items()} == {c: f"llm-{c}" for c in ("tp8", "tp4pp2", "pp8")}
    for d in servers.values():
        rc = d._replica_config
        assert rc.placement_group_strategy == "STRICT_PACK"
        assert sum(b.get("GPU", 0) for b in rc.placement_group_bundles) == 8
        assert d.max_queued_requests == r.scenario.server.max_queued_requests


@pytest.mark.parametrize("direct", [True, False])
def test_ingress_replicas_share_a_routing_store_and_the_queue(direct: bool) -> None:
    r = load_scenario(DEMO)
    data = r.scenario.model_dump(mode="json")
    data["server"] |= {"ingress_replicas": 2, "max_queued_requests": 5, "direct_ingress": direct}
    ingress = build_app(AppArgs.model_validate({"scenario": data, "base_dir": str(DEMO.parent)}).model_dump()
                        )._bound_deployment
    assert ingress.num_replicas == 2
    env = ingress.ray_actor_options["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"
    assert (env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1") is direct
    store = ingress.init_args[1]._bound_deployment
    assert store.name == "routing-store" and store.num_replicas == 1 and store.ray_actor_options["num_cpus"] == 0
    args = AppArgs.model_validate({"scenario": data, "base_dir": str(DEMO.parent)}).model_dump()
    assert build_config_app(args | {"config": "tp8"})._bound_deployment.max_queued_requests == 3  # ⌈5/2⌉
