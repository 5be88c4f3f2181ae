"""The generated Grafana JSON: valid structure for current Grafana, consistent references, export files."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.controller import ControllerMetrics
from monitoring import metrics as m
from monitoring.dashboards.export import export, rendered_dashboards
from monitoring.dashboards.render import DATASOURCE_UID, SCHEMA_VERSION

MACROS = {"__interval", "__rate_interval", "__range", "__interval_ms"}
VAR_REF = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def _all_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


@pytest.fixture(scope="module")
def dashboards() -> list[dict[str, Any]]:
    return rendered_dashboards()


def test_comparison_and_drilldown_have_unique_uids(dashboards: list[dict[str, Any]]) -> None:
    uids = [d["uid"] for d in dashboards]
    assert len(uids) == 2 and len(set(uids)) == len(uids)
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", u) for u in uids)  # Grafana's uid limits


def test_schema_version_is_current(dashboards: list[dict[str, Any]]) -> None:
    assert SCHEMA_VERSION >= 39
    assert all(d["schemaVersion"] == SCHEMA_VERSION for d in dashboards)


def test_panel_ids_are_unique_within_each_dashboard(dashboards: list[dict[str, Any]]) -> None:
    for d in dashboards:
        ids = [p["id"] for p in _all_panels(d)]
        assert len(ids) == len(set(ids)), d["uid"]


def test_every_query_goes_through_the_provisioned_datasource(dashboards: list[dict[str, Any]]) -> None:
    for d in dashboards:
        for p in _all_panels(d):
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs))
            assert all(t["datasource"]["uid"] == DATASOURCE_UID for t in p["targets"])
        for a in d["annotations"]["list"]:
            if "expr" in a:
                assert a["datasource"]["uid"] == DATASOURCE_UID
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                assert v["datasource"]["uid"] == DATASOURCE_UID


def test_panels_fit_the_grid_without_overlapping(dashboards: list[dict[str, Any]]) -> None:
    for d in dashboards:
        cells: set[tuple[int, int]] = set()
        for p in _all_panels(d):
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{d['uid']}: {p['title']} overlaps another panel"
            cells |= mine


def test_every_variable_used_is_defined(dashboards: list[dict[str, Any]]) -> None:
    for d in dashboards:
        defined = {v["name"] for v in d["templating"]["list"]} | MACROS
        exprs = [t["expr"] for p in _all_panels(d) for t in p.get("targets", [])]
        exprs += [a["expr"] for a in d["annotations"]["list"] if "expr" in a]
        exprs += [v["query"] for v in d["templating"]["list"] if v["type"] == "query"]
        for e in exprs:
            used = {next(g for g in m.groups() if g) for m in VAR_REF.finditer(e)}
            assert used <= defined, f"{d['uid']}: {e} uses {used - defined}"


def test_engine_metrics_take_the_prefix_variable(dashboards: list[dict[str, Any]]) -> None:
    """Engine panels must work for Ray (ray_vllm_) and plain vLLM (vllm:) without a second copy."""
    for d in dashboards:
        prefix = next(v for v in d["templating"]["list"] if v["name"] == "engine_prefix")
        assert [o["value"] for o in prefix["options"]] == ["ray_vllm_", "vllm:"]
        for p in _all_panels(d):
            for t in p.get("targets", []):
                assert "ray_vllm_" not in t["expr"] and "vllm:" not in t["expr"], t["expr"]


def test_comparison_dashboard_covers_the_issue(dashboards: list[dict[str, Any]]) -> None:
    comp = next(d for d in dashboards if d["uid"] == "parallax-comparison")
    rows = [p["title"] for p in comp["panels"] if p["type"] == "row"]
    assert rows[:3] == ["TTFT", "TPOT", "E2E"]
    text = json.dumps(comp)
    for needle in ("parallax:goodput", "parallax:slo_attainment", "num_requests_waiting", "num_requests_running",
                   "kv_cache_usage_perc", "num_preemptions_total", "parallax_controller_routing_weight",
                   "parallax:output_tokens_per_gpu"):
        assert needle in text, needle
    assert {a["name"] for a in comp["annotations"]["list"]} >= {"controller decisions"}
    assert {v["name"] for v in comp["templating"]["list"]} >= {"config", "sla_class", "engine_prefix"}


REPARTITION = (m.REPARTITION_DECISIONS, m.REPARTITION_MOVES, m.TRANSITION_STEP_SECONDS, m.PREDICTED_GAIN,
               m.REALISED_GAIN, m.SHAPE_GPUS)
SERIES = {"counter": "_total", "histogram": "_bucket", "gauge": ""}   # the series each kind is queried by


def test_the_repartition_row_reads_every_series_the_policy_exports(dashboards: list[dict[str, Any]]) -> None:
    comp = next(d for d in dashboards if d["uid"] == "parallax-comparison")
    panels = comp["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"].startswith("Re-partitioning"))
    end = next((i for i, p in enumerate(panels) if i > start and p["type"] == "row"), len(panels))
    row = json.dumps(panels[start:end] + panels[start].get("panels", []))
    exported = {f.name + SERIES[f.type] for f in ControllerMetrics().registry.collect()
                if any(f.name.endswith(name) for name in REPARTITION)}
    assert len(exported) == len(REPARTITION)
    for series in exported:   # as the controller's registry names them on /metrics
        assert series in row, series


def test_export_writes_dashboards_and_provisioning(tmp_path: Path) -> None:
    written = export(tmp_path, prometheus_url="http://127.0.0.1:9999", scrape_interval_s=2.0)
    assert {p.name for p in written} == {"parallax-comparison.json", "parallax-config.json", "parallax.yaml"}
    ds = yaml.safe_load((tmp_path / "provisioning/datasources/parallax.yaml").read_text())["datasources"][0]
    assert ds["uid"] == DATASOURCE_UID and ds["url"] == "http://127.0.0.1:9999"
    assert ds["jsonData"]["timeInterval"] == "2s"
    prov = yaml.safe_load((tmp_path / "provisioning/dashboards/parallax.yaml").read_text())["providers"][0]
    assert Path(prov["options"]["path"]) == (tmp_path / "dashboards").resolve()
    for p in (tmp_path / "dashboards").iterdir():
        assert json.loads(p.read_text())["uid"] == p.stem
