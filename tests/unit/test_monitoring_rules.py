"""Recording rules: complete per (source, figure), valid for promtool, GPU counts from the scenario."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app
from controllers.scoreboard import scoreboard_rules
from deployments.resolve import load_scenario
from monitoring import rules as r
from schema.deployment import ParallelConfig

CONFIGS = [ParallelConfig(name="tp8", tp=8), ParallelConfig(name="tp4pp2", tp=4, pp=2),
           ParallelConfig(name="tp2", tp=2, replicas=3)]
FIGURES = {r.REQUEST_RATE, r.ERROR_RATIO, r.TTFT, r.TPOT, r.E2E, r.SLO_ATTAINMENT, r.GOODPUT,
           r.OUTPUT_TOKENS_RATE, r.OUTPUT_TOKENS_PER_GPU}
TRAFFIC = {r.CLASS_ARRIVAL_RATE, r.CLASS_PROMPT_TOKENS_MEAN, r.CLASS_PROMPT_TOKENS, r.CLASS_OUTPUT_TOKENS_MEAN,
           r.CLASS_OUTPUT_TOKENS}


def _rules(configs: list[ParallelConfig]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = r.recording_rules(configs, window="20s", interval_s=2)["groups"][0]["rules"]
    return rules


def test_every_figure_is_recorded_for_both_sources() -> None:
    rules = _rules(CONFIGS)
    for source in ("server", "client"):
        recorded = {x["record"] for x in rules if x["labels"].get("source") == source}
        assert recorded == FIGURES | (TRAFFIC if source == "server" else set()), source
    quantiles = {(x["record"], x["labels"]["quantile"]) for x in rules if "quantile" in x["labels"]}
    assert quantiles == {(f, q) for f in (r.TTFT, r.TPOT, r.E2E, r.CLASS_PROMPT_TOKENS, r.CLASS_OUTPUT_TOKENS)
                         for q in ("0.5", "0.9", "0.99")}
    traffic = [x["expr"] for x in rules if x["record"] in TRAFFIC]
    assert all("sum by (sla_class" in e and "config" not in e for e in traffic)   # over every configuration


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
def test_promtool_accepts_the_rules(tmp_path: Path, configs: list[ParallelConfig]) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make setup` (installs Debian's prometheus package)"
    path = r.write_rules(tmp_path / "rules.yml", r.recording_rules(configs))
    assert "&id" not in path.read_text()  # plain YAML, no anchors
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_for_the_demo_scenario(tmp_path: Path) -> None:
    s = load_scenario(Path(__file__).parents[2] / "scenarios" / "demo.yaml").scenario
    gpus = {x["labels"]["config"]: x["expr"] for x in _rules(s.configurations) if x["record"] == r.CONFIG_GPUS}
    assert gpus == {c.name: f"vector({c.gpus})" for c in s.configurations}


def test_attainment_counts_failed_requests_as_misses(tmp_path: Path) -> None:
    """promtool evaluates the rules on synthetic counters: per second, tp8/chat ends one request that met the
    SLO and one that failed (the server counts no SLO verdict for a failed request); tp2/chat only fails."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make setup` (installs Debian's prometheus package)"
    write_rules_file = r.write_rules(tmp_path / "rules.yml", r.recording_rules([], window="20s", interval_s=1))
    server = "ray_parallax_"

    def series(name: str, **labels: str) -> dict[str, str]:
        sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{sel}}}", "values": "0+1x120"}
    inputs = [series(f"{server}requests_total", config="tp8", sla_class="chat", status="ok"),
              series(f"{server}requests_total", config="tp8", sla_class="chat", status="error"),
              series(f"{server}slo_met_total", config="tp8", sla_class="chat"),
              series(f"{server}requests_total", config="tp2", sla_class="chat", status="error")]

    def expect(record: str, values: dict[str, float]) -> dict[str, object]:
        return {"expr": f'{record}{{source="server"}}', "eval_time": "100s",
                "exp_samples": [{"labels": f'{record}{{config="{c}",sla_class="chat",source="server"}}', "value": v}
                                for c, v in values.items()]}
    spec = {"rule_files": [write_rules_file.name], "evaluation_interval": "1s", "tests": [{
        "interval": "1s", "input_series": inputs, "promql_expr_test": [
            expect(r.SLO_ATTAINMENT, {"tp8": 0.5, "tp2": 0.0}),
            expect(r.GOODPUT, {"tp8": 1.0, "tp2": 0.0}),
            expect(r.REQUEST_RATE, {"tp8": 2.0, "tp2": 1.0}),
            expect(r.ERROR_RATIO, {"tp8": 0.5, "tp2": 1.0})]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec))
    done = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_command_defaults_to_the_window_the_controller_reads(tmp_path: Path) -> None:
    """`parallax prometheus rules SCENARIO` writes the rules the scenario's controller reads (its window_s)."""
    demo = Path(__file__).parents[2] / "scenarios" / "demo.yaml"
    out = tmp_path / "rules.yml"
    result = CliRunner().invoke(app, ["prometheus", "rules", str(demo), "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(out.read_text())
    assert written == scoreboard_rules(load_scenario(demo).scenario)
    window = f"[{load_scenario(demo).scenario.controller.window_s:g}s]"
    assert all(window in x["expr"] for x in written["groups"][0]["rules"] if "rate(" in x["expr"])


def test_the_traffic_rules_sum_over_configurations(tmp_path: Path) -> None:
    """promtool evaluates the traffic rules on synthetic series: per second, chat arrives once on tp8 and once on
    tp2 (prompts of 100 and 300 tokens), summarize once on tp2 (4000 tokens); two chat requests end ok (40 and 60
    output tokens) and one fails (its length is no output length)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make setup` (installs Debian's prometheus package)"
    rules_file = r.write_rules(tmp_path / "rules.yml", r.recording_rules([], window="20s", interval_s=1))
    server = "ray_parallax_"

    def counter(name: str, per_s: float, **labels: str) -> dict[str, str]:
        sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{sel}}}", "values": f"0+{per_s:g}x120"}

    def histogram(name: str, value: int, config: str, cls: str) -> list[dict[str, str]]:
        """One observation of `value` per second: the buckets at or above it count it."""
        out = [counter(f"{server}{name}_bucket", 1.0 if value <= b else 0.0, config=config, sla_class=cls,
                       le=f"{b:g}") for b in (64.0, 128.0, 256.0, 512.0, 4096.0)]
        return [*out, counter(f"{server}{name}_bucket", 1.0, config=config, sla_class=cls, le="+Inf")]
    inputs = [counter(f"{server}arrivals_total", 1.0, config="tp8", sla_class="chat"),
              counter(f"{server}arrivals_total", 1.0, config="tp2", sla_class="chat"),
              counter(f"{server}arrivals_total", 1.0, config="tp2", sla_class="summarize"),
              counter(f"{server}prompt_tokens_total", 100, config="tp8", sla_class="chat"),
              counter(f"{server}prompt_tokens_total", 300, config="tp2", sla_class="chat"),
              counter(f"{server}prompt_tokens_total", 4000, config="tp2", sla_class="summarize"),
              counter(f"{server}requests_total", 1.0, config="tp8", sla_class="chat", status="ok"),
              counter(f"{server}requests_total", 1.0, config="tp2", sla_class="chat", status="ok"),
              counter(f"{server}requests_total", 1.0, config="tp2", sla_class="chat", status="error"),
              counter(f"{server}output_tokens_total", 40, config="tp8", sla_class="chat"),
              counter(f"{server}output_tokens_total", 60, config="tp2", sla_class="chat"),
              *histogram("request_prompt_tokens", 100, "tp8", "chat"),
              *histogram("request_prompt_tokens", 300, "tp2", "chat"),
              *histogram("request_prompt_tokens", 4000, "tp2", "summarize"),
              *histogram("request_output_tokens", 50, "tp8", "chat"),
              *histogram("request_output_tokens", 50, "tp2", "chat")]

    def expect(record: str, values: dict[str, float], quantile: str | None = None) -> dict[str, object]:
        q = f',quantile="{quantile}"' if quantile else ""
        return {"expr": f'{record}{{source="server"{q}}}', "eval_time": "100s",
                "exp_samples": [{"labels": f'{record}{{sla_class="{c}",source="server"{q}}}', "value": v}
                                for c, v in values.items()]}
    spec = {"rule_files": [rules_file.name], "evaluation_interval": "1s", "tests": [{
        "interval": "1s", "input_series": inputs, "promql_expr_test": [
            expect(r.CLASS_ARRIVAL_RATE, {"chat": 2.0, "summarize": 1.0}),
            expect(r.CLASS_PROMPT_TOKENS_MEAN, {"chat": 200.0, "summarize": 4000.0}),
            # chat: half its prompts in (64, 128], half in (256, 512]: the median is the first bucket's top
            expect(r.CLASS_PROMPT_TOKENS, {"chat": 128.0, "summarize": 512 + (4096 - 512) * 0.5}, "0.5"),
            expect(r.CLASS_OUTPUT_TOKENS_MEAN, {"chat": 50.0})]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec))
    done = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
