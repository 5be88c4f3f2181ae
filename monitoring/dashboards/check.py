"""Run every query of a rendered dashboard against a live Prometheus, interpolating the template
variables the way Grafana's Prometheus datasource does, and report which queries return no data."""

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitoring.promql import PromClient, PrometheusError

ALL = "$__all"
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$")
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")


def regular_escape(value: str) -> str:
    """Grafana's prometheusRegularEscape (single-valued variables)."""
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape (multi-valued / include-All variables)."""
    return _REGEX_SPECIAL.sub(lambda mt: "\\\\" + mt.group(0), value.replace("\\", "\\\\\\\\"))


def format_variable(var: Mapping[str, Any], selected: Sequence[str], options: Sequence[str]) -> str:
    """The text Grafana puts in a query for `var` when `selected` is chosen (ALL stands for "All")."""
    if ALL in selected:
        if var.get("allValue") is not None:
            return str(var["allValue"])
        selected = options
    if not var.get("multi") and not var.get("includeAll"):
        return regular_escape(selected[0] if selected else "")
    escaped = [regex_escape(v) for v in selected]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(expr: str, values: Mapping[str, str]) -> str:
    """Replace $name, ${name}, ${name:fmt} and [[name]] by their formatted values (unknown names stay)."""
    def sub(mt: re.Match[str]) -> str:
        name = mt.group(1) or mt.group(2) or mt.group(3)
        return values.get(name, mt.group(0))
    return _VAR.sub(sub, expr)


def interval_macros(step_s: float, scrape_interval_s: float, range_s: float) -> dict[str, str]:
    """$__interval, $__rate_interval (max(interval + scrape, 4 × scrape)) and $__range."""
    rate = max(step_s + scrape_interval_s, 4 * scrape_interval_s)
    return {"__interval": f"{step_s:g}s", "__interval_ms": f"{step_s * 1000:g}", "__rate_interval": f"{rate:g}s",
            "__range": f"{range_s:g}s"}


@dataclass(frozen=True)
class QueryCheck:
    """One query's outcome: how many series had at least one value, or the error."""

    dashboard: str
    where: str
    expr: str
    series: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.series > 0


def _queries(dash: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    def panels(items: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            yield f"panel {p['title']!r} {t['refId']}", t["expr"]
    for a in dash.get("annotations", {}).get("list", []):
        if "expr" in a:
            yield f"annotation {a['name']!r}", a["expr"]


def resolve_variables(dash: Mapping[str, Any], client: PromClient, chosen: Mapping[str, Sequence[str]],
                      macros: Mapping[str, str]) -> tuple[dict[str, str], list[QueryCheck]]:
    """Each variable's formatted value (in dashboard order, so later variables may use earlier ones)."""
    values: dict[str, str] = dict(macros)
    checks: list[QueryCheck] = []
    uid = dash["uid"]
    for var in dash.get("templating", {}).get("list", []):
        name = var["name"]
        if var["type"] == "custom":
            options = [o.strip() for o in var["query"].split(",") if o.strip()]
        else:
            query = interpolate(var["query"], values)
            parsed = _LABEL_VALUES.match(query)
            if parsed is None:
                checks.append(QueryCheck(uid, f"variable {name}", query, 0, "not a label_values(...) query"))
                options = []
            else:
                try:
                    options = client.label_values(parsed.group(2), parsed.group(1))
                    checks.append(QueryCheck(uid, f"variable {name}", query, len(options)))
                except PrometheusError as e:
                    checks.append(QueryCheck(uid, f"variable {name}", query, 0, str(e)))
                    options = []
        current = var.get("current", {}).get("value", [])
        default = [current] if isinstance(current, str) else list(current)
        if not default or default == [""]:
            default = options[:1]
        values[name] = format_variable(var, list(chosen.get(name, default)), options)
    return values, checks


def check_dashboard(dash: Mapping[str, Any], client: PromClient, chosen: Mapping[str, Sequence[str]] | None = None,
                    range_s: float = 120.0, step_s: float = 2.0, scrape_interval_s: float = 1.0) -> list[QueryCheck]:
    """Run every variable, panel and annotation query of `dash` over the last `range_s` seconds."""
    macros = interval_macros(step_s, scrape_interval_s, range_s)
    values, checks = resolve_variables(dash, client, chosen or {}, macros)
    end = time.time()
    for where, raw in _queries(dash):
        expr = interpolate(raw, values)
        try:
            series = client.query_range(expr, end - range_s, end, step_s)
            with_data = sum(1 for s in series if any(v == v for _, v in s.points))  # v == v: not NaN
            checks.append(QueryCheck(dash["uid"], where, expr, with_data))
        except PrometheusError as e:
            checks.append(QueryCheck(dash["uid"], where, expr, 0, str(e)))
    return checks
