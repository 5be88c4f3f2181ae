"""`parallax prometheus up|down|rules` and `parallax dashboards export|check`: thin wrappers."""

import json
from pathlib import Path

import typer
from rich.table import Table

from controllers.cli.terminal import console, fail
from deployments.resolve import load_scenario
from monitoring.dashboards.check import check_dashboard
from monitoring.dashboards.export import export, rendered_dashboards
from monitoring.duration import prometheus_duration
from monitoring.prometheus import (
    PrometheusLaunchError,
    ScrapeTarget,
    attach_prometheus,
    read_state,
    start_prometheus,
    stop_run,
)
from monitoring.promql import PromClient
from monitoring.rules import recording_rules, write_rules
from schema.deployment import ServerConfig
from schema.monitoring import MonitoringConfig
from schema.scenario import Scenario, ScenarioError

prometheus_app = typer.Typer(help="Run (or attach to) the Prometheus that watches a run.", no_args_is_help=True)
dashboards_app = typer.Typer(help="Grafana dashboards generated from code.", no_args_is_help=True)


def _scenario(path: Path | None) -> Scenario | None:
    if path is None:
        return None
    try:
        return load_scenario(path).scenario
    except ScenarioError as e:
        fail(str(e))


def _run_dir(run_dir: Path | None, scenario: Scenario | None) -> Path:
    return run_dir or Path("runs") / (scenario.name if scenario else "default")


def _parse_target(spec: str) -> ScrapeTarget:
    job, sep, address = spec.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not port.isdigit() or not job:
        fail(f"--target {spec!r}: expected JOB=HOST:PORT, e.g. vllm=127.0.0.1:8000")
    return ScrapeTarget(job, int(port), host or "127.0.0.1")


def _rules(scenario: Scenario | None, window: str | None, interval_s: float) -> dict[str, object]:
    """The scenario's rules; the window defaults to its controller's (the window the scoreboard reads), else 30s."""
    if window is None:
        window = prometheus_duration(scenario.controller.window_s) if scenario else "30s"
    return recording_rules(scenario.configurations if scenario else [], window, interval_s)


SCENARIO_ARG = typer.Argument(None, help="scenario YAML: ports, scrape interval, configurations for the rules")
RUN_DIR_OPT = typer.Option(None, "--run-dir", help="run folder (default runs/<scenario name> or runs/default)")


@prometheus_app.command("up")
def prometheus_up(
    scenario_file: Path | None = SCENARIO_ARG,
    run_dir: Path | None = RUN_DIR_OPT,
    port: int | None = typer.Option(None, help="Prometheus port on 127.0.0.1; 0 picks a free one"),
    ray_port: int | None = typer.Option(None, help="Ray's metrics export port (default: server.metrics_port)"),
    loadgen_port: int | None = typer.Option(None, help="load generator /metrics port"),
    controller_port: int | None = typer.Option(None, help="controller /metrics port"),
    target: list[str] = typer.Option([], help="extra scrape target JOB=HOST:PORT (repeatable), e.g. a vLLM server"),
    window: str | None = typer.Option(None, help="rate window of the recording rules, e.g. 30s (default: the "
                                      "scenario's controller.window_s, which the controller reads; else 30s)"),
    url: str | None = typer.Option(None, help="attach to this Prometheus instead of starting one"),
) -> None:
    """Start Prometheus for a run (config, rules and data in the run folder), or attach to an existing one."""
    scenario = _scenario(scenario_file)
    mon = scenario.monitoring if scenario else MonitoringConfig()
    server = scenario.server if scenario else ServerConfig()
    folder = _run_dir(run_dir, scenario)
    attach_url = url or mon.prometheus_url
    try:
        if attach_url:
            handle = attach_prometheus(attach_url, folder)
            rules = write_rules(Path(handle.folder) / "rules.yml", _rules(scenario, window, mon.scrape_interval_s))
            console.print(f"attached to Prometheus at {handle.url}; load the recording rules into it: {rules}")
            return
        targets = [ScrapeTarget("ray", ray_port if ray_port is not None else server.metrics_port),
                   ScrapeTarget("loadgen", loadgen_port if loadgen_port is not None else mon.loadgen_metrics_port),
                   ScrapeTarget("controller",
                                controller_port if controller_port is not None else mon.controller_metrics_port),
                   *(_parse_target(t) for t in target)]
        handle = start_prometheus(folder, targets, _rules(scenario, window, mon.scrape_interval_s),
                                  port=port if port is not None else mon.prometheus_port,
                                  scrape_interval_s=mon.scrape_interval_s)
    except PrometheusLaunchError as e:
        fail(str(e))
    console.print(f"Prometheus ready at {handle.url} (pid {handle.pid}); config, rules and data in {handle.folder}")
    if not scenario:
        console.print("no scenario given: the output-tokens-per-GPU rules are left out")
    console.print(f"stop it with: parallax prometheus down --run-dir {folder}")


@prometheus_app.command("down")
def prometheus_down(scenario_file: Path | None = SCENARIO_ARG, run_dir: Path | None = RUN_DIR_OPT) -> None:
    """Stop the Prometheus recorded in the run folder (SIGTERM, wait, SIGKILL if it must)."""
    folder = _run_dir(run_dir, _scenario(scenario_file))
    try:
        handle = stop_run(folder)
    except PrometheusLaunchError as e:
        fail(str(e))
    if handle is None:
        console.print(f"no Prometheus recorded in {folder}; nothing to stop")
    elif handle.attached:
        console.print(f"left the attached Prometheus at {handle.url} running")
    else:
        console.print(f"stopped Prometheus pid {handle.pid} ({handle.url})")


@prometheus_app.command("status")
def prometheus_status(scenario_file: Path | None = SCENARIO_ARG, run_dir: Path | None = RUN_DIR_OPT) -> None:
    """Print the Prometheus recorded in the run folder and whether it answers."""
    folder = _run_dir(run_dir, _scenario(scenario_file))
    try:
        handle = read_state(folder)
    except PrometheusLaunchError as e:
        fail(str(e))
    if handle is None:
        fail(f"no Prometheus recorded in {folder}; start one with `parallax prometheus up`")
    with PromClient(handle.url, timeout_s=2.0) as client:
        ready = client.ready()
    console.print(json.dumps({**handle.state(), "ready": ready}, indent=2))
    if not ready:
        raise typer.Exit(1)


@prometheus_app.command("rules")
def prometheus_rules(
    scenario_file: Path = typer.Argument(..., help="scenario YAML (its configurations give the GPU counts)"),
    out: Path = typer.Option(Path("rules.yml"), "--out", "-o", help="rules file to write"),
    window: str | None = typer.Option(None, help="rate window of the recording rules, e.g. 30s (default: the "
                                      "scenario's controller.window_s, which the controller reads; else 30s)"),
) -> None:
    """Write the recording rules for a scenario (to load into a Prometheus of your own)."""
    scenario = _scenario(scenario_file)
    interval = scenario.monitoring.scrape_interval_s if scenario else 1.0
    console.print(f"wrote {write_rules(out, _rules(scenario, window, interval))}")


@dashboards_app.command("export")
def dashboards_export(
    out: Path = typer.Argument(..., help="folder for dashboards/*.json and provisioning/"),
    prometheus_url: str = typer.Option("http://127.0.0.1:9090", help="URL Grafana uses to reach Prometheus"),
    scrape_interval_s: float = typer.Option(1.0, help="Prometheus scrape interval (sets $__rate_interval)"),
    dashboards_path: str | None = typer.Option(None, help="where Grafana sees OUT/dashboards (default: here)"),
) -> None:
    """Write the Grafana dashboards and the datasource / dashboard provisioning files."""
    try:
        written = export(out, prometheus_url, scrape_interval_s, dashboards_path)
    except OSError as e:
        fail(f"{out}: cannot write there ({e.strerror}); choose another folder")
    for path in written:
        console.print(str(path))
    console.print(f"point Grafana's provisioning path (GF_PATHS_PROVISIONING) at {out / 'provisioning'}")


@dashboards_app.command("check")
def dashboards_check(
    url: str = typer.Argument(..., help="Prometheus URL"),
    var: list[str] = typer.Option([], help="template variable NAME=VALUE (repeatable), e.g. engine_prefix=vllm:"),
    range_s: float = typer.Option(300.0, "--range", help="seconds of history to query"),
    scrape_interval_s: float = typer.Option(1.0, help="Prometheus scrape interval"),
) -> None:
    """Run every dashboard query against a live Prometheus; exit 1 if any returns no data."""
    chosen: dict[str, list[str]] = {}
    for v in var:
        name, sep, value = v.partition("=")
        if not sep or not name:
            fail(f"--var {v!r}: expected NAME=VALUE")
        chosen.setdefault(name, []).append(value)
    table = Table("dashboard", "query", "series", "problem")
    failed = 0
    with PromClient(url) as client:
        if not client.ready():
            fail(f"Prometheus at {url} is not ready ({url}/-/ready did not answer 200); check the URL")
        for dash in rendered_dashboards():
            for c in check_dashboard(dash, client, chosen, range_s=range_s, scrape_interval_s=scrape_interval_s):
                if not c.ok:
                    failed += 1
                    table.add_row(c.dashboard, f"{c.where}\n{c.expr}", str(c.series), c.error or "no data")
    if failed:
        console.print(table)
        console.print(f"{failed} queries returned no data")
        raise typer.Exit(1)
    console.print("every dashboard query returned data")
