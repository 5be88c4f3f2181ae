"""Render a Dashboard description to Grafana dashboard JSON (schemaVersion 39)."""

from typing import Any

from monitoring.dashboards.model import Annotation, Dashboard, Panel, Variable

SCHEMA_VERSION = 39
DATASOURCE_UID = "parallax-prometheus"
GRID_WIDTH = 24


def datasource_ref(uid: str = DATASOURCE_UID) -> dict[str, str]:
    return {"type": "prometheus", "uid": uid}


def _panel(p: Panel, pid: int, x: int, y: int, ds: dict[str, str]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit, "color": {"mode": "palette-classic"}}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    if p.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never",
                              "spanNulls": False, "axisSoftMin": 0}
        options: dict[str, Any] = {
            "legend": {"showLegend": True, "displayMode": "table", "placement": "bottom",
                       "calcs": ["lastNotNull", "mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "none", "textMode": "auto"}
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": ds,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {"datasource": ds, "refId": chr(ord("A") + i), "expr": t.expr, "legendFormat": t.legend,
             "range": True, "instant": False, "editorMode": "code"}
            for i, t in enumerate(p.targets)
        ],
    }


def _variable(v: Variable, ds: dict[str, str]) -> dict[str, Any]:
    if v.include_all and v.default is None:
        current = {"text": ["All"] if v.multi else "All", "value": ["$__all"] if v.multi else "$__all"}
    else:
        value = v.default if v.default is not None else (v.options[0] if v.options else "")
        current = {"text": [value] if v.multi else value, "value": [value] if v.multi else value}
    out: dict[str, Any] = {
        "name": v.name,
        "label": v.label,
        "type": v.kind,
        "query": v.query,
        "current": current,
        "multi": v.multi,
        "includeAll": v.include_all,
        "hide": 0,
        "skipUrlSync": False,
    }
    if v.all_value is not None:
        out["allValue"] = v.all_value
    if v.kind == "custom":
        out["options"] = [{"text": o, "value": o, "selected": o == current["value"]} for o in v.options]
    else:
        out.update({"datasource": ds, "definition": v.query, "refresh": 2, "sort": 1, "regex": "", "options": []})
    return out


def _annotation(a: Annotation, ds: dict[str, str]) -> dict[str, Any]:
    return {"name": a.name, "datasource": ds, "enable": True, "hide": False, "iconColor": a.color,
            "expr": a.expr, "step": "", "titleFormat": a.title, "textFormat": a.text,
            "tagKeys": ",".join(a.tag_keys), "useValueForTime": False}


BUILTIN_ANNOTATION = {
    "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
}


def render(d: Dashboard, datasource_uid: str = DATASOURCE_UID) -> dict[str, Any]:
    """Grafana JSON for `d`: rows become row panels, panels flow left to right under their row."""
    ds = datasource_ref(datasource_uid)
    panels: list[dict[str, Any]] = []
    pid, y = 0, 0
    for row in d.rows:
        pid += 1
        children: list[dict[str, Any]] = []
        row_json: dict[str, Any] = {"id": pid, "type": "row", "title": row.title, "collapsed": row.collapsed,
                                    "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}, "panels": []}
        y += 1
        x, line_height = 0, 0
        for p in row.panels:
            if x + p.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            pid += 1
            children.append(_panel(p, pid, x, y, ds))
            x += p.width
            line_height = max(line_height, p.height)
        y += line_height
        panels.append(row_json)
        # Grafana keeps a collapsed row's panels inside it, an expanded row's after it.
        if row.collapsed:
            row_json["panels"] = children
        else:
            panels.extend(children)
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": list(d.tags),
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": d.refresh,
        "time": {"from": d.time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [{"type": "dashboards", "title": "Parallax dashboards", "tags": ["parallax"], "asDropdown": True,
                   "includeVars": True, "keepTime": True}],
        "annotations": {"list": [BUILTIN_ANNOTATION] + [_annotation(a, ds) for a in d.annotations]},
        "templating": {"list": [_variable(v, ds) for v in d.variables]},
        "panels": panels,
    }
