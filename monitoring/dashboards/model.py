"""Dashboards described as data: rows of panels, each a list of PromQL targets, plus template variables."""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel; `legend` is a Grafana legend format such as "{{config}}"."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A time series (or stat) panel; `width` is in Grafana's 24-column grid."""

    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: Literal["timeseries", "stat"] = "timeseries"
    width: int = 8
    height: int = 8
    min: float | None = 0
    max: float | None = None


@dataclass(frozen=True)
class Row:
    """A titled row of panels (laid out left to right, wrapping at 24 columns)."""

    title: str
    panels: tuple[Panel, ...]
    collapsed: bool = False


@dataclass(frozen=True)
class Variable:
    """A template variable: `custom` (fixed options) or `query` (`label_values(...)` against Prometheus).

    `all_value` is what "All" stands for in queries (a regex such as ".*").
    """

    name: str
    label: str
    kind: Literal["custom", "query"]
    query: str
    options: tuple[str, ...] = ()
    default: str | None = None
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None


@dataclass(frozen=True)
class Annotation:
    """Events drawn on every panel: the timestamps where `expr` has a value."""

    name: str
    expr: str
    title: str
    text: str
    color: str = "orange"
    tag_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[Variable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    tags: tuple[str, ...] = ("parallax",)
    refresh: str = "5s"
    time_from: str = "now-15m"
