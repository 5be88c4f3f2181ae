"""Access rules that hold in the source: YAML is only ever loaded safely, and nothing but the KubeRay
manifest (pods must be reachable through their Service) listens on all interfaces."""

import re
from pathlib import Path

import pytest

from schema.deployment import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for pkg in ("deployments", "controllers", "loadgen", "monitoring", "bench")
                 for p in (ROOT / pkg).rglob("*.py"))
UNSAFE_YAML = re.compile(r"yaml\.(load|load_all|full_load|unsafe_load)\(|yaml\.(Unsafe|Full)?Loader\b")
ALL_INTERFACES = re.compile(r"""["'](0\.0\.0\.0|::)["']""")
TOLD_OTHERWISE = {ROOT / "deployments" / "kuberay.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_loads_yaml_safely_and_binds_localhost(path: Path) -> None:
    text = path.read_text()
    assert not UNSAFE_YAML.search(text), f"{path}: use yaml.safe_load"
    if path not in TOLD_OTHERWISE:
        assert not ALL_INTERFACES.search(text), f"{path}: bind 127.0.0.1 unless the user says otherwise"


def test_server_defaults_to_localhost() -> None:
    assert ServerConfig().host == "127.0.0.1"
