"""Scenario fuzzing: every mutated version of scenarios/*.yaml is either valid or rejected with a clear
`FILE: FIELD: message` error — never a traceback — through the library and through `parallax validate`."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from controllers.cli.app import app
from deployments.resolve import load_scenario
from schema.scenario import Scenario, ScenarioError

SCENARIOS = sorted(Path(__file__).resolve().parents[2].joinpath("scenarios").glob("*.yaml"))
TOP_FIELDS = set(Scenario.model_fields)
# Where a problem may be reported: a scenario field path, the file itself, or a YAML line.
LOCATION_RE = re.compile(r"(\(top level\)|\(file\)|line \d+, column \d+): ")

Path_ = tuple[str | int, ...]

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["", "0", "-1", "fp3", "tp8", "../../etc/passwd", "a\x00b", "h100-sxm",
                                           "poisson", "lognormal", "preset"]),
    st.lists(st.integers(-3, 9), max_size=3), st.dictionaries(st.sampled_from(["kind", "x", "value"]),
                                                              st.integers(-3, 9), max_size=2),
)


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    out: list[Path_] = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _parent(data: Any, path: Path_) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A scenario from the repository with one to three structural mutations."""
    data = yaml.safe_load(draw(st.sampled_from(SCENARIOS)).read_text())
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        key = path[-1]
        op = draw(st.sampled_from(["replace", "delete", "add-unknown", "duplicate-item"]))
        if op == "replace":
            parent[key] = draw(junk)
        elif op == "delete":
            del parent[key]
        elif op == "add-unknown" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["tpp", "Name", "nodez", "extra"]))] = draw(junk)
        elif op == "duplicate-item" and isinstance(parent, list):
            parent.append(parent[key])
        if not isinstance(data, dict):
            break
    classes = data.get("classes") if isinstance(data, dict) else None
    if isinstance(classes, list) and classes and isinstance(classes[0], dict) and draw(st.booleans()):
        # a length file next to the scenario: numbers, words, binary, a folder, or missing
        classes[0][draw(st.sampled_from(["input", "output"]))] = {
            "kind": "empirical", "path": draw(st.sampled_from([*sorted(LENGTH_FILES), "missing.txt"]))}
    return data


LENGTH_FILES: dict[str, bytes | None] = {
    "lens.txt": b"12\n40\n7\n", "words.txt": b"twelve\nforty\n", "blob.bin": b"\xff\xfe\x00\x81", "dir": None}


def _write_scenario(folder: Path, data: object) -> Path:
    for name, content in LENGTH_FILES.items():
        if content is None:
            (folder / name).mkdir(exist_ok=True)
        else:
            (folder / name).write_bytes(content)
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


EDITS = ["", ":", "- ", "{", "]", "\t", "\n  ", "&a", "*a", "!!python/name:os.system ", "%", "9", "-", "'"]


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    """A scenario file's text with a few characters deleted, inserted or replaced."""
    text = draw(st.sampled_from(SCENARIOS)).read_text()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        text = text[:i] + draw(st.sampled_from(EDITS)) + text[j:]
    return text


def _assert_clear(message: str, source: str, written: set[str]) -> None:
    """Each line is `SOURCE: FIELD: message`, FIELD a location or a field path starting at a key of the file."""
    assert "Traceback" not in message
    lines = [ln for ln in message.splitlines() if ln.strip()]
    assert lines, "an error must say what is wrong"
    for ln in lines:
        assert ln.startswith(f"{source}: "), ln
        rest = ln.removeprefix(f"{source}: ")
        m = LOCATION_RE.match(rest)
        if m is None:
            head = next((k for k in sorted(TOP_FIELDS | written, key=len, reverse=True)
                         if rest.startswith(k) and rest[len(k):len(k) + 1] in (".", "[", ":")), None)
            assert head is not None, f"{ln!r} names no field of the file"
            assert ": " in rest[len(head):], f"{ln!r}: no message after the field"
        assert rest.rpartition(": ")[2].strip(), f"no message in {ln!r}"


def _check_file(path: Path) -> None:
    try:
        written = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        written = None
    keys = {str(k) for k in written} if isinstance(written, dict) else set()
    try:
        load_scenario(path)
    except ScenarioError as e:
        _assert_clear(str(e), str(path), keys)


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=mutated())
def test_mutated_scenarios_are_valid_or_clearly_rejected(data: dict[str, Any], tmp_path: Path) -> None:
    _check_file(_write_scenario(tmp_path, data))


@FUZZ
@given(text=mutated_text())
def test_corrupted_yaml_is_clearly_rejected(text: str, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    _check_file(path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_validate_cli_exits_2_naming_a_field(data: dict[str, Any], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_scenario(tmp_path, data)
    monkeypatch.chdir(tmp_path.parent)  # relative length files resolve from the scenario's folder, not the cwd
    result = CliRunner().invoke(app, ["validate", str(path)])
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in out
    assert result.exit_code in (0, 2), (result.exit_code, out, result.exception)
    if result.exit_code == 2:
        assert "error:" in out
        assert str(path.name) in out
    else:
        assert result.exception is None


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.name)
def test_shipped_scenarios_stay_valid(scenario: Path) -> None:
    load_scenario(scenario, need_configurations=False)   # a planning question has none yet


def test_python_tags_are_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "s.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ScenarioError, match=r"line 1, column \d+: YAML syntax error"):
        load_scenario(path)
    assert not marker.exists()
