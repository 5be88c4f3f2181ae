"""Write the dashboards as JSON files plus Grafana provisioning files for the datasource and dashboards.

Layout:  DIR/dashboards/<uid>.json
         DIR/provisioning/datasources/parallax.yaml   (Prometheus datasource with the uid the panels use)
         DIR/provisioning/dashboards/parallax.yaml    (file provider reading DIR/dashboards)
Point Grafana's `paths.provisioning` (GF_PATHS_PROVISIONING) at DIR/provisioning.
"""

import json
from pathlib import Path
from typing import Any

import yaml

from monitoring.dashboards.parallax import all_dashboards
from monitoring.dashboards.render import DATASOURCE_UID, render


def datasource_provisioning(prometheus_url: str, scrape_interval_s: float = 1.0) -> dict[str, Any]:
    return {"apiVersion": 1, "datasources": [{
        "name": "Parallax Prometheus", "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": prometheus_url, "isDefault": True, "editable": True,
        # timeInterval = the scrape interval: Grafana derives $__rate_interval from it.
        "jsonData": {"timeInterval": f"{scrape_interval_s:g}s", "httpMethod": "POST"},
    }]}


def dashboard_provisioning(dashboards_dir: Path) -> dict[str, Any]:
    return {"apiVersion": 1, "providers": [{
        "name": "parallax", "folder": "Parallax", "type": "file", "disableDeletion": False,
        "allowUiUpdates": True, "updateIntervalSeconds": 30,
        "options": {"path": str(dashboards_dir), "foldersFromFilesStructure": False},
    }]}


def rendered_dashboards() -> list[dict[str, Any]]:
    return [render(d) for d in all_dashboards()]


def export(out: Path, prometheus_url: str = "http://127.0.0.1:9090", scrape_interval_s: float = 1.0,
           dashboards_path: str | None = None) -> list[Path]:
    """Write everything under `out`; `dashboards_path` is where Grafana will see DIR/dashboards
    (default: its absolute path here). Returns the files written."""
    dash_dir = out / "dashboards"
    ds_dir = out / "provisioning" / "datasources"
    prov_dir = out / "provisioning" / "dashboards"
    for d in (dash_dir, ds_dir, prov_dir):
        d.mkdir(parents=True, exist_ok=True)
    written = []
    for dash in rendered_dashboards():
        path = dash_dir / f"{dash['uid']}.json"
        path.write_text(json.dumps(dash, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    ds = ds_dir / "parallax.yaml"
    ds.write_text(yaml.safe_dump(datasource_provisioning(prometheus_url, scrape_interval_s), sort_keys=False))
    prov = prov_dir / "parallax.yaml"
    target = Path(dashboards_path) if dashboards_path else dash_dir.resolve()
    prov.write_text(yaml.safe_dump(dashboard_provisioning(target), sort_keys=False))
    return [*written, ds, prov]
