"""`parallax plan --phase K` plans one phase of a load schedule: its classes' shares at its rate. Known from
physics: a phase of short requests with a TPOT target one GPU cannot meet (8B bf16 on H100: ~9 ms per token
at TP1, ~6 ms at TP2) takes TP2; a phase of long prompts with a lax target takes two TP1 replicas."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app

SCENARIO: dict[str, Any] = {
    "name": "phased", "model": "llama-3.1-8b", "dtype": "bf16", "hardware": {"gpu": "h100-sxm", "gpus_per_node": 2},
    "classes": [
        {"name": "fast", "share": 0.5, "slo": {"ttft_ms": 200, "tpot_ms": 8, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 128}, "output": {"kind": "fixed", "value": 64}},
        {"name": "bulk", "share": 0.5, "slo": {"e2e_ms": 60000, "attainment": 0.9},
         "input": {"kind": "fixed", "value": 4000}, "output": {"kind": "fixed", "value": 64}}],
    "load": {"arrival": {"kind": "poisson"}, "phases": [
        {"name": "interactive", "duration_s": 60, "rate": 2, "shares": {"fast": 1.0}},
        {"duration_s": 60, "rate": 2, "shares": {"bulk": 1.0}}]},
}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("phased") / "phased.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    return path


def plan(scenario: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    res = CliRunner().invoke(app, ["plan", str(scenario), "--json", "--seeds", "1", "--workers", "1", "--out",
                                   str(scenario.parent / "runs"), *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), res.stderr


@pytest.mark.parametrize(("phase", "shape"), [("interactive", {"tp": 2, "pp": 1, "replicas": 1}),
                                              ("2", {"tp": 1, "pp": 1, "replicas": 2})])
def test_each_phase_gets_the_split_its_mix_asks_for(scenario: Path, phase: str, shape: dict[str, int]) -> None:
    ranked, said = plan(scenario, "--phase", phase)
    (pool,) = ranked[0]["deployment"]
    assert {k: pool[k] for k in shape} == shape
    assert set(ranked[0]["classes"]) == ({"fast"} if phase == "interactive" else {"bulk"})
    assert "at 2 req/s" in said


def test_without_a_phase_the_whole_schedule_is_planned_and_a_bad_phase_is_one_line(scenario: Path) -> None:
    ranked, said = plan(scenario, "--top", "1")
    assert set(ranked[0]["classes"]) == {"fast", "bulk"} and "the whole schedule's mix (fast 50%, bulk 50%" in said
    res = CliRunner().invoke(app, ["plan", str(scenario), "--phase", "night"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "--phase night: no phase 'night'; give a phase's name or number (1 to 2): interactive, phase-2" in " ".join(
        res.output.split())
