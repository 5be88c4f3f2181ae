"""The scenario's `faults:` section: what each action needs, and what a fault may aim at given the rest of the
scenario, refused with the field and the fix (`parallax validate` among them)."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app
from deployments.resolve import parse_scenario
from schema.faults import Fault
from schema.scenario import ScenarioError

BASE: dict[str, Any] = {
    "name": "t", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2},
    "configurations": [{"name": "tp8", "tp": 8}, {"name": "tp2", "tp": 2, "replicas": 4}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 450},
                 "input": {"kind": "fixed", "value": 100}, "output": {"kind": "fixed", "value": 20}}],
    "load": {"rates": [1.0, 2.0], "duration_s": 30, "warmup_s": 5, "workers": 2},   # 65 s in all
}
GOOD = [{"at_s": 10, "action": "kill_replica", "target": "tp8"},
        {"at_s": 10, "action": "kill_replica", "target": "tp2", "replica": 3},
        {"at_s": 20, "action": "kill_worker", "target": "tp8", "rank": 7},
        {"at_s": 30, "action": "slow_gpu", "target": "tp2", "rank": 1, "factor": 0.5, "duration_s": 30},
        {"at_s": 40, "action": "restart_prometheus"},
        {"at_s": 50, "action": "pause_controller", "duration_s": 5},
        {"at_s": 60, "action": "kill_load_worker", "worker": 1}]


def with_faults(*faults: dict[str, Any], **top: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE) | {"faults": list(faults)}
    for k, v in top.items():
        d[k] = d[k] | v if isinstance(d.get(k), dict) else v
    return d


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(data, "s.yaml")
    return e.value.problems


def test_every_action_with_what_it_needs_is_valid() -> None:
    s = parse_scenario(with_faults(*GOOD)).scenario
    assert [f.action for f in s.faults] == ["kill_replica", "kill_replica", "kill_worker", "slow_gpu",
                                            "restart_prometheus", "pause_controller", "kill_load_worker"]
    assert s.load.planned_s == 65
    assert s.faults[3].label() == "slow_gpu tp2[0] rank 1 ×0.5" and s.faults[3].ends_s == 60


@pytest.mark.parametrize(("fault", "field", "words"), [
    ({"at_s": 1, "action": "kill_replica"}, "faults[0]", "add target"),
    ({"at_s": 1, "action": "restart_prometheus", "target": "tp8"}, "faults[0]", "remove target"),
    ({"at_s": 1, "action": "slow_gpu", "target": "tp8", "factor": 0.5}, "faults[0]", "add duration_s"),
    ({"at_s": 1, "action": "slow_gpu", "target": "tp8", "duration_s": 5}, "faults[0]", "needs factor"),
    ({"at_s": 1, "action": "kill_replica", "target": "tp8", "factor": 0.5}, "faults[0]", "remove it"),
    ({"at_s": 1, "action": "kill_replica", "target": "tp8", "duration_s": 3}, "faults[0]", "remove duration_s"),
    ({"at_s": 1, "action": "kill_replica", "target": "tp8", "rank": 2}, "faults[0]", "rank does not apply"),
    ({"at_s": 1, "action": "pause_controller", "duration_s": 2, "worker": 1}, "faults[0]", "worker does not apply"),
    ({"at_s": 1, "action": "slow_gpu", "target": "tp8", "duration_s": 5, "factor": 1.5}, "faults[0].factor",
     "less than 1"),
    ({"at_s": -1, "action": "restart_prometheus"}, "faults[0].at_s", "greater than or equal to 0"),
    ({"at_s": 1, "action": "unplug"}, "faults[0].action", "kill_replica"),
])
def test_what_an_action_needs(fault: dict[str, Any], field: str, words: str) -> None:
    found = problems(with_faults(fault))
    assert any(f == field and words in msg for f, msg in found), found


@pytest.mark.parametrize(("fault", "top", "field", "words"), [
    ({"at_s": 1, "action": "kill_replica", "target": "tp4"}, {}, "faults[0].target",
     "'tp4' is not a configuration; kill_replica hits one of: tp8, tp2"),
    ({"at_s": 1, "action": "slow_gpu", "target": "chat", "duration_s": 2, "factor": 0.5}, {}, "faults[0].target",
     "'chat' is an SLA class, not a configuration"),
    ({"at_s": 1, "action": "kill_replica", "target": "tp2", "replica": 4}, {}, "faults[0].replica",
     "give 0 to 3"),
    ({"at_s": 1, "action": "kill_worker", "target": "tp8", "rank": 8}, {}, "faults[0].rank",
     "give a rank from 0 to 7"),
    ({"at_s": 65, "action": "restart_prometheus"}, {}, "faults[0].at_s",
     "beyond the run: its load lasts 65 s"),
    ({"at_s": 60, "action": "pause_controller", "duration_s": 10}, {}, "faults[0].duration_s",
     "ends at 70 s, beyond the run"),
    ({"at_s": 1, "action": "kill_load_worker", "worker": 2}, {}, "faults[0].worker", "give a worker from 0 to 1"),
    ({"at_s": 1, "action": "kill_load_worker"}, {"load": {"workers": 1}}, "faults[0].action",
     "set load.workers ≥ 2"),
    ({"at_s": 1, "action": "slow_gpu", "target": "tp8", "duration_s": 2, "factor": 0.5},
     {"engine": {"kind": "vllm", "model_path": "/m"}}, "faults[0].action", "use engine kind sim"),
    ({"at_s": 1, "action": "restart_prometheus"}, {"monitoring": {"prometheus_url": "http://127.0.0.1:9"}},
     "faults[0].action", "remove prometheus_url"),
])
def test_what_the_rest_of_the_scenario_allows(fault: dict[str, Any], top: dict[str, Any], field: str,
                                              words: str) -> None:
    found = problems(with_faults(fault, **top))
    assert any(f == field and words in msg for f, msg in found), found


def test_a_one_gpu_replica_has_no_worker_to_kill() -> None:
    data = with_faults({"at_s": 1, "action": "kill_worker", "target": "tp1"})
    data["configurations"].append({"name": "tp1", "tp": 1})
    data["model"] = "llama-3.1-8b"
    data["hardware"]["nodes"] = 3
    (field, msg), = problems(data)
    assert field == "faults[0].action" and "use kill_replica" in msg


def test_a_traces_length_is_not_known_here_so_no_time_is_refused() -> None:
    f = Fault(at_s=1e6, action="restart_prometheus")
    data = with_faults(f.model_dump(exclude_defaults=True))
    data["load"] = {"arrival": {"kind": "trace", "path": str(Path(__file__))}}
    assert parse_scenario(data).scenario.faults == [f]


def test_validate_refuses_with_one_line_per_problem(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(with_faults({"at_s": 99, "action": "kill_replica", "target": "tp4"},
                                            {"at_s": 1, "action": "kill_load_worker", "worker": 5})))
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["validate", str(p)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 3, result.output
    assert "faults[0].target: 'tp4' is not a configuration" in lines[0]
    assert "faults[0].at_s: kill_replica tp4[0] at 99 s is beyond the run" in lines[1]
    assert "faults[1].worker: load.workers is 2; give a worker from 0 to 1" in lines[2]
