"""Every validation error names the file, the field and the fix."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app
from deployments.resolve import load_scenario, parse_scenario
from schema.scenario import ScenarioError

SCENARIOS = sorted(Path(__file__).resolve().parents[2].joinpath("scenarios").glob("*.yaml"))

BASE: dict[str, Any] = {
    "name": "t",
    "model": "llama-3.1-70b",
    "dtype": "fp8",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2},
    "configurations": [{"name": "tp8", "tp": 8}, {"name": "tp4pp2", "tp": 4, "pp": 2}],
    "classes": [
        {"name": "chat", "share": 0.5, "slo": {"ttft_ms": 450, "tpot_ms": 40},
         "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 20}},
        {"name": "batch", "share": 0.5, "slo": {"e2e_ms": 60000},
         "input": {"kind": "preset", "name": "longalpaca"}, "output": {"kind": "preset", "name": "longalpaca"}},
    ],
}


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(data, "s.yaml")
    assert str(e.value).startswith("s.yaml: ")
    return e.value.problems


def mutate(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    for path, value in changes.items():
        node: Any = d
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        last = keys[-1]
        node[int(last) if last.isdigit() else last] = value
    return d


def test_base_is_valid() -> None:
    r = parse_scenario(copy.deepcopy(BASE))
    assert r.model.name == "llama-3.1-70b" and r.gpu.name == "h100-sxm"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "fits" in result.output


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"model": "llama-9b"}, "model", "unknown model"),
    ({"hardware__gpu": "h1000"}, "hardware.gpu", "unknown GPU"),
    ({"dtype": "fp7"}, "dtype", "unknown dtype"),
    ({"configurations__0__tp": 3}, "configurations[0].tp", "does not divide"),
    ({"configurations__1__pp": 81, "configurations__1__tp": 1, "configurations__1__spread_pp_over_nodes": True},
     "configurations[1].pp", "deeper than"),
    ({"configurations__0__replicas": 3}, "configurations", "need 32 GPUs"),
    ({"configurations__0__tp": 16}, "configurations[0].tp", "inside a node"),
    ({"classes__0__slo__ttft_ms": 0}, "classes[0].slo.ttft_ms", "greater than 0"),
    ({"classes__1__slo__e2e_ms": -5}, "classes[1].slo.e2e_ms", "greater than 0"),
    ({"classes__0__slo": {"attainment": 0.9}}, "classes[0].slo", "at least one of"),
    ({"classes__0__share": 0.7}, "classes", "sum to 1.2"),
    ({"classes__0__input": {"kind": "uniform", "min": 10, "max": 5}}, "classes[0].input", "max must be"),
    ({"classes__0__input": {"kind": "zipf"}}, "classes[0].input", "kind"),
    ({"configurations__1__name": "tp8"}, "configurations[1].name", "duplicate"),
    ({"tp_size": 8}, "tp_size", "unknown field"),
    ({"server": {"default_class": "nope"}}, "server.default_class", "not a class"),
    ({"engine": {"memory_model": "hbm"}}, "engine.memory_model", "'vllm' or 'study'"),
    ({"engine": {"memory_model": "study", "gpu_memory_utilization": 0.5}}, "engine", "does not apply"),
    ({"engine": {"memory_model": "study", "kind": "vllm", "model_path": "/m"}}, "engine", "vLLM sizes its own"),
])
def test_errors_name_the_field(changes: dict[str, Any], field: str, words: str) -> None:
    probs = problems_of(mutate(**changes))
    assert any(f == field and words in msg for f, msg in probs), probs


def test_weights_that_do_not_fit_say_how_much() -> None:
    data = mutate(model="llama-3.1-405b", dtype="bf16",
                  configurations=[{"name": "tp4", "tp": 4}])
    (field, msg), = problems_of(data)
    assert field == "configurations[0]"
    assert "llama-3.1-405b bf16 needs 812 GB" in msg and "4×80 GB" in msg and "raise tp or pp" in msg


def test_tp_beyond_kv_heads_replicates_like_vllm() -> None:
    # 70B has 8 KV heads: tp=8 splits them; 405B with 128 heads and tp=16 (2 nodes' worth) is refused
    # only because TP must stay inside a node, not because of KV heads.
    r = parse_scenario(mutate(hardware={"gpu": "h100-sxm", "gpus_per_node": 16, "nodes": 1},
                              configurations=[{"name": "tp16", "tp": 16}]))
    assert r.scenario.configurations[0].tp == 16


def test_missing_required_fields_are_named() -> None:
    d = copy.deepcopy(BASE)
    del d["hardware"]
    probs = problems_of(d)
    assert ("hardware", "required field is missing; add it") in probs


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nmodel: llama-3.1-70b\nhardware: {gpu: h100-sxm\nclasses: []\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert str(e.value).startswith(f"{p}: line ")
    assert "YAML syntax error" in str(e.value)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")


def test_cli_reports_errors_without_traceback(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(mutate(**{"configurations__0__tp": 3, "classes__0__share": 0.9})))
    result = CliRunner().invoke(app, ["validate", str(p)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "configurations[0].tp" in result.output and "classes: class shares sum to 1.4" in result.output


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ScenarioError, match="YAML"):
        load_scenario(p)


def test_odd_keys_are_quoted_so_each_problem_stays_on_one_line() -> None:
    data = mutate()
    data["configurations"][0]["n\nnopar"] = None
    probs = problems_of(data)
    assert ('configurations[0]["n\\nnopar"]', "unknown field; remove it or check its spelling") in probs


def test_validate_says_which_memory_model_sized_the_kv_cache(tmp_path: Path) -> None:
    out = {}
    for model in ("vllm", "study"):
        p = tmp_path / f"{model}.yaml"
        p.write_text(yaml.safe_dump(mutate(engine={"memory_model": model})))
        result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["validate", str(p)])
        assert result.exit_code == 0, result.output
        assert f"memory model '{model}'" in result.output
        out[model] = result.output
    assert "0.9 of HBM" in out["vllm"] and "all HBM" in out["study"]
