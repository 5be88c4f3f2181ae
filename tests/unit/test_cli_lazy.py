"""The command line loads a command's module only when that command runs: `parallax --help` and
`parallax validate` of a simulated scenario never import Ray, matplotlib or the report (they take seconds),
and every command of the static table still resolves to a working command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controllers.cli.app import COMMANDS, app

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("ray", "ray.serve", "matplotlib", "controllers.report", "controllers.run")


def loaded_after(*args: str) -> tuple[int, list[str], list[str]]:
    """Run `parallax ARGS` in a fresh interpreter: its exit code, the HEAVY modules and the command modules
    it imported."""
    code = ("import json, sys\nfrom controllers.cli.app import main\n"
            f"sys.argv = ['parallax', *{list(args)!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
            f"print(json.dumps([code, [m for m in {list(HEAVY)!r} if m in sys.modules],"
            " sorted(m for m in sys.modules if m.startswith('controllers.cli.') and m not in"
            " ('controllers.cli.app', 'controllers.cli.lazy'))]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    code_, heavy, commands = json.loads(out.stdout.strip().splitlines()[-1])
    return code_, heavy, commands


def test_help_imports_no_command_module() -> None:
    code, heavy, commands = loaded_after("--help")
    assert code == 0
    assert heavy == [] and commands == [], (heavy, commands)


def test_validate_of_a_simulated_scenario_imports_neither_ray_nor_the_report() -> None:
    code, heavy, commands = loaded_after("validate", "scenarios/demo.yaml")
    assert code == 0
    assert heavy == [], heavy
    assert commands == ["controllers.cli.terminal", "controllers.cli.validate"]


def test_a_command_loads_only_its_own_module() -> None:
    code, heavy, commands = loaded_after("tiny-model", "--help")
    assert code == 0 and "ray.serve" not in heavy
    assert commands == ["controllers.cli.tiny_model"]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_listed_command_resolves_and_shows_its_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and name in result.output


def test_the_list_shows_every_command_with_its_summary() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for name, spec in COMMANDS.items():
        assert name in result.output and spec.summary[:40] in result.output


def test_an_unknown_command_is_refused_with_a_suggestion() -> None:
    result = CliRunner().invoke(app, ["validat"])
    assert result.exit_code == 2 and "Did you mean 'validate'" in result.output
