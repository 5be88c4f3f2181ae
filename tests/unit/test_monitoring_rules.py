"""Recording rules: complete per (source, figure), valid for promtool, GPU counts from the scenario."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from controllers.scenario import load_scenario
from monitoring import rules as r

CONFIGS = [r.ConfigGpus("tp8", 8, 1, 1), r.ConfigGpus("tp4pp2", 4, 2, 1), r.ConfigGpus("tp2", 2, 1, 3)]
FIGURES = {r.REQUEST_RATE, r.ERROR_RATIO, r.TTFT, r.TPOT, r.E2E, r.SLO_ATTAINMENT, r.GOODPUT,
           r.OUTPUT_TOKENS_RATE, r.OUTPUT_TOKENS_PER_GPU}


def _rules(configs: list[r.ConfigGpus]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = r.recording_rules(configs, window="20s", interval_s=2)["groups"][0]["rules"]
    return rules


def test_every_figure_is_recorded_for_both_sources() -> None:
    rules = _rules(CONFIGS)
    for source in ("server", "client"):
        recorded = {x["record"] for x in rules if x["labels"].get("source") == source}
        assert recorded == FIGURES, source
    quantiles = {(x["record"], x["labels"]["quantile"]) for x in rules if "quantile" in x["labels"]}
    assert quantiles == {(f, q) for f in (r.TTFT, r.TPOT, r.E2E) for q in ("0.5", "0.9", "0.99")}


def test_sources_read_the_contract_names() -> None:
    exprs: dict[str, list[str]] = {"server": [], "client": []}
    for x in _rules(CONFIGS):
        if "source" in x["labels"]:
            exprs[x["labels"]["source"]].append(x["expr"])
    assert all("ray_parallax_" in e for e in exprs["server"])
    assert all("parallax_client_" in e for e in exprs["client"])
    assert all("[20s]" in e for e in exprs["server"] + exprs["client"])


def test_gpu_count_includes_replicas() -> None:
    gpus = {x["labels"]["config"]: x["expr"] for x in _rules(CONFIGS) if x["record"] == r.CONFIG_GPUS}
    assert gpus == {"tp8": "vector(8)", "tp4pp2": "vector(8)", "tp2": "vector(6)"}


def test_without_configurations_per_gpu_is_left_out() -> None:
    recorded = {x["record"] for x in _rules([])}
    assert r.OUTPUT_TOKENS_PER_GPU not in recorded and r.CONFIG_GPUS not in recorded
    assert r.GOODPUT in recorded


@pytest.mark.parametrize("configs", [CONFIGS, []])
def test_promtool_accepts_the_rules(tmp_path: Path, configs: list[r.ConfigGpus]) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make setup` (installs Debian's prometheus package)"
    path = r.write_rules(tmp_path / "rules.yml", r.recording_rules(configs))
    assert "&id" not in path.read_text()  # plain YAML, no anchors
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_for_the_demo_scenario(tmp_path: Path) -> None:
    s = load_scenario(Path(__file__).parents[2] / "scenarios" / "demo.yaml").scenario
    configs = [r.ConfigGpus(c.name, c.tp, c.pp, c.replicas) for c in s.configurations]
    gpus = {x["labels"]["config"]: x["expr"] for x in _rules(configs) if x["record"] == r.CONFIG_GPUS}
    assert gpus == {c.name: f"vector({c.gpus})" for c in s.configurations}
