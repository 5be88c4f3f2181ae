"""A disaggregated configuration (`disagg: {prefill: {tp, pp, replicas}, decode: {…}}`): validated per role,
its GPUs counted everywhere they are counted, accepted by validate and simulate, refused by the live path."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app
from controllers.validate import footprints
from deployments.cluster import Capacity, capacity_problems, local_cpus
from deployments.placement import Node, PlacementError, plan_nodes, role_nodes
from deployments.resolve import load_scenario, parse_scenario
from loadgen.lengths import longest_length
from monitoring import rules as r
from schema.deployment import ParallelConfig
from schema.scenario import ScenarioError
from schema.traffic import (
    EmpiricalLength,
    FixedLength,
    LognormalLength,
    NormalLength,
    PresetLength,
    UniformLength,
)

PD = {"name": "pd", "disagg": {"prefill": {"tp": 1, "replicas": 6}, "decode": {"tp": 2}}}
BASE: dict[str, Any] = {
    "name": "pd", "model": "llama-3.1-70b", "dtype": "fp8", "kv_dtype": "fp8",
    "hardware": {"gpu": "h200", "gpus_per_node": 8, "nodes": 2},
    "configurations": [{"name": "agg", "tp": 2, "replicas": 4}, PD],
    "classes": [{"name": "rag", "share": 1.0, "slo": {"ttft_ms": 1000, "tpot_ms": 50},
                 "input": {"kind": "fixed", "value": 4000}, "output": {"kind": "fixed", "value": 500}}],
}


def scenario(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


def problems(data: dict[str, Any], serving: bool = False) -> dict[str, str]:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(data, "s.yaml", serving=serving)
    return dict(e.value.problems)


def pd(prefill: dict[str, int], decode: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"name": "pd", "disagg": {"prefill": prefill, "decode": decode}, **extra}


def test_every_role_counts_its_gpus() -> None:
    c = ParallelConfig.model_validate(PD)
    assert [(g.role, g.tp, g.replicas, g.gpus) for g in c.groups] == [("prefill", 1, 6, 6), ("decode", 2, 1, 2)]
    assert c.gpus == 8 and c.num_replicas == 7
    assert ParallelConfig(name="a", tp=2, replicas=4).groups[0].role is None


def test_top_level_shape_and_disagg_together_are_refused() -> None:
    p = problems(scenario(configurations=[{**PD, "tp": 2}]))
    assert "tp=2 and disagg both given" in p["configurations[0]"]
    assert "disagg.prefill" in p["configurations[0]"]


def test_each_role_is_checked_where_it_is_written() -> None:
    p = problems(scenario(configurations=[pd({"tp": 3}, {"tp": 2})]))
    assert "does not divide" in p["configurations[0].disagg.prefill.tp"]
    p = problems(scenario(configurations=[pd({"tp": 16}, {"tp": 2})]))
    assert "TP must stay inside a node" in p["configurations[0].disagg.prefill.tp"]
    p = problems(scenario(model="llama-3.1-405b", configurations=[pd({"tp": 8}, {"tp": 1})]))
    assert "decode role (tp1×pp1)" in p["configurations[0].disagg.decode"]
    assert "raise disagg.decode.tp or disagg.decode.pp" in p["configurations[0].disagg.decode"]


def test_a_decode_replica_that_cannot_hold_the_longest_request_is_refused_with_the_fix() -> None:
    # 70B FP8 on H100 at 0.55 of HBM: a TP2 replica keeps ~64 k tokens of KV cache, a TP4 one ~578 k
    h100 = {"hardware": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2}, "engine": {"gpu_memory_utilization": 0.55}}
    long = [{**BASE["classes"][0], "input": {"kind": "uniform", "min": 1000, "max": 30_000},
             "output": {"kind": "fixed", "value": 50_000}}]
    p = problems(scenario(**h100, classes=long, configurations=[pd({"tp": 4}, {"tp": 2})]))
    msg = p["configurations[0].disagg.decode"]
    assert "30,000 prompt + 50,000 output tokens" in msg and "(KV cache)" in msg
    assert "raise disagg.decode.tp or disagg.decode.pp, or use a smaller kv_dtype" in msg
    assert "configurations[0].disagg.prefill" not in p            # a prefill replica holds only the prompt
    parse_scenario(scenario(**h100, classes=long, configurations=[pd({"tp": 2}, {"tp": 4})]))
    # the longest of an unbounded distribution is its 99.9th percentile: 10 k + 3.09 × 1.5 k, with the 50 k output
    # beyond TP2's 64 k tokens (the mean alone would fit)
    wide = [{**long[0], "input": {"kind": "normal", "mean": 10_000, "std": 1_500}}]
    assert "configurations[0].disagg.decode" in problems(scenario(**h100, classes=wide,
                                                                  configurations=[pd({"tp": 4}, {"tp": 2})]))


def test_a_context_limit_names_max_model_len() -> None:
    p = problems(scenario(engine={"max_model_len": 4096}))
    assert "(engine.max_model_len)" in p["configurations[1].disagg.decode"]
    assert "raise engine.max_model_len" in p["configurations[1].disagg.decode"]
    assert "configurations[1].disagg.prefill" not in p            # 4000 prompt tokens + the first one fit


def test_gpus_of_every_role_are_counted_against_the_hardware() -> None:
    p = problems(scenario(hardware={"gpu": "h200", "gpus_per_node": 8, "nodes": 1}))
    assert "need 16 GPUs side by side" in p["configurations"]


def test_the_live_path_refuses_a_disaggregated_configuration_in_one_line(tmp_path: Path) -> None:
    p = problems(scenario(), serving=True)
    assert list(p) == ["configurations[1].disagg"] and "not served live yet" in p["configurations[1].disagg"]
    path = tmp_path / "pd.yaml"
    path.write_text(yaml.safe_dump(scenario()))
    for cmd in (["up"], ["run"], ["serve-config"], ["kuberay", "--image", "img"]):
        res = CliRunner().invoke(app, [*cmd, str(path)])
        assert res.exit_code == 2, (cmd, res.output)
        assert "configurations[1].disagg: a disaggregated configuration" in res.output
        assert "Traceback" not in res.output
    assert load_scenario(path).scenario.configurations[1].disagg is not None    # simulate, validate, plan read it


def test_validate_prints_one_row_per_role(tmp_path: Path) -> None:
    path = tmp_path / "pd.yaml"
    path.write_text(yaml.safe_dump(scenario()))
    rows = footprints(load_scenario(path))
    assert [(f.name, f.role, f.tp, f.replicas, f.gpus) for f in rows] == [
        ("agg", None, 2, 4, 8), ("pd", "prefill", 1, 6, 6), ("pd", "decode", 2, 1, 2)]
    assert rows[1].kv_tokens_per_replica < rows[2].kv_tokens_per_replica   # TP1 holds 70 GB of weights
    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["validate", str(path)])
    assert res.exit_code == 0, res.output
    assert "pd prefill" in res.output and "pd decode" in res.output


def test_placement_gives_every_replica_of_every_role_a_node() -> None:
    c = ParallelConfig.model_validate(pd({"tp": 2, "replicas": 2}, {"tp": 4}))
    plan = plan_nodes([c], [Node("a", 8)])
    assert plan == {"pd": [["a"], ["a"], ["a"]]}
    with pytest.raises(PlacementError, match="a decode replica needs 4 GPUs"):
        plan_nodes([c], [Node("a", 2), Node("b", 2), Node("c", 2)])
    cap = Capacity(free_gpus=8, free_cpus=16, node_gpus=[4, 4])
    assert capacity_problems([c], cap) == []        # P, P on one node, D on the other
    short = capacity_problems([c], Capacity(free_gpus=6, free_cpus=16, node_gpus=[8]))
    assert short and "need 8 GPUs (pd: 8)" in short[0]


def test_role_nodes_pack_replicas_in_order() -> None:
    c = ParallelConfig.model_validate(pd({"tp": 4, "replicas": 2}, {"tp": 4, "replicas": 2}))
    assert role_nodes(c, 8) == {"prefill": [0, 0], "decode": [1, 1]}
    assert role_nodes(c, 16) == {"prefill": [0, 0], "decode": [0, 0]}
    spread = ParallelConfig.model_validate(pd({"tp": 4, "pp": 4}, {"tp": 2}, spread_pp_over_nodes=True))
    assert role_nodes(spread, 8) == {"prefill": [None], "decode": [0]}


def test_local_ray_has_a_cpu_for_every_replica_of_every_role(tmp_path: Path) -> None:
    path = tmp_path / "pd.yaml"
    path.write_text(yaml.safe_dump(scenario(configurations=[PD])))
    one = tmp_path / "agg.yaml"
    one.write_text(yaml.safe_dump(scenario(configurations=[{"name": "agg", "tp": 2}])))
    assert local_cpus(load_scenario(path)) - local_cpus(load_scenario(one)) == 6


def test_the_per_gpu_rule_divides_by_every_gpu_of_the_configuration() -> None:
    rules = r.recording_rules([ParallelConfig.model_validate(PD)], window="20s")["groups"][0]["rules"]
    gpus = next(x for x in rules if x["record"] == r.CONFIG_GPUS)
    assert gpus["expr"] == "vector(8)"
    assert gpus["labels"] == {"config": "pd", "tp": "1/2", "pp": "1/1", "replicas": "6/1"}


@pytest.mark.parametrize(("dist", "longest"), [
    (FixedLength(value=7), 7), (UniformLength(min=3, max=9), 9), (PresetLength(name="longalpaca"), 9092),
    (NormalLength(mean=1000, std=100, max=1100), 1100), (NormalLength(mean=1000, std=100), 1309),
    (LognormalLength(mean=100, sigma=0.5, max=400), 400), (LognormalLength(mean=100, sigma=0.5), 414),
])
def test_the_longest_length_a_class_sends(dist: Any, longest: int) -> None:
    assert longest_length(dist, 0) == longest


def test_the_longest_length_of_a_lengths_file(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("5\n17\n3\n")
    assert longest_length(EmpiricalLength(path=Path("l.txt")), 0, tmp_path) == 17


SIMULATE = ["simulate", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--input-len", "2000", "--output-len", "50"]


def test_simulate_takes_a_disaggregated_shape() -> None:
    res = CliRunner().invoke(app, [*SIMULATE, "--prefill-replicas", "2", "--decode-tp", "2", "--request-rate", "4",
                                   "--num-requests", "100", "--json"])
    assert res.exit_code == 0, res.output
    out = yaml.safe_load(res.stdout)
    assert out["disagg"] == {"prefill": {"tp": 1, "pp": 1, "replicas": 2}, "decode": {"tp": 2, "pp": 1, "replicas": 1}}
    assert "tp" not in out and out["num_requests"] == 100
    assert 0 < out["kv_transfer_ms"]["p50"] < out["ttft_ms"]["p50"]
    for bad, says in ((["--tp", "2", "--decode-tp", "2"], "not both"),
                      (["--decode-tp", "2", "--batch-size", "8"], "--batch-size"),
                      (["--prefill-tp", "16"], "--prefill-tp 16 exceeds")):
        res = CliRunner().invoke(app, [*SIMULATE, *bad, "--max-throughput"])
        assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output, res.output


def test_simulate_sweeps_a_scenario_with_a_disaggregated_configuration(tmp_path: Path) -> None:
    path = tmp_path / "pd.yaml"
    path.write_text(yaml.safe_dump(scenario(load={"arrival": {"kind": "poisson", "rate": 2}, "duration_s": 20})))
    res = CliRunner().invoke(app, ["simulate", "--scenario", str(path), "--json"])
    assert res.exit_code == 0, res.output
    agg, pd_ = yaml.safe_load(res.stdout)
    assert "disagg" not in agg and pd_["disagg"]["prefill"]["replicas"] == 6
    assert pd_["classes"]["rag"]["num_requests"] == agg["classes"]["rag"]["num_requests"] == 40
    assert pd_["breakdown"]["kv_transfer"] > 0
