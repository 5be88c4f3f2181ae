"""`parallax run SCENARIO`: Ray + Serve deployment + Prometheus + controller + load, then the run folder.

Everything started here is stopped here, in reverse order, whatever happens (Ctrl-C included); the
run folder (records, scoreboard, decisions, dashboards, what-if, report) is written in every case.
"""

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client import start_http_server
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from controllers import runfolder as rf
from controllers.controller import Controller, ControllerMetrics, prom_query
from controllers.faults.record import FAULTS_JSONL
from controllers.faults.schedule import FOLLOW_S, FaultSchedule
from controllers.live_view import render
from controllers.plan.parallel import runner
from controllers.repartition_log import REPARTITION_JSONL
from controllers.repartitioner import for_run
from controllers.report import render_report
from controllers.router_client import HttpRouter
from controllers.scoreboard import scoreboard_rules
from controllers.shift_compare import compare_shift, write_comparison
from controllers.transition.serve_fleet import ServeFleet
from controllers.whatif import planned_capacities, write_whatif
from deployments.cluster import connect, start_local_ray
from deployments.deploy import deploy, teardown
from deployments.fleet import live_set_reader
from deployments.health import unhealthy_configs
from deployments.progress import ConfigProgress
from deployments.resolve import Resolved
from loadgen.control import LoadControl
from loadgen.records import read_records
from loadgen.runner import run_load
from monitoring.dashboards.export import export as export_dashboards
from monitoring.ports import free_port, port_or_free
from monitoring.prometheus import (
    PrometheusHandle,
    ScrapeTarget,
    attach_prometheus,
    reload_rules,
    restart_prometheus,
    start_prometheus,
    stop_prometheus,
)
from monitoring.promql import PromClient
from monitoring.rules import write_rules
from schema.scenario import Scenario

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    folder: Path
    report: Path | None
    interrupted: bool
    error: str | None = None


def run_folder(root: Path, name: str) -> Path:
    """A new runs/<scenario>-<timestamp>/ folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = root / f"{name}-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = root / f"{name}-{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder


@contextlib.contextmanager
def _ray(resolved: Resolved, metrics_port: int) -> Iterator[None]:
    """A local Ray owned by this run (or the cluster in RAY_ADDRESS), shut down on exit."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        connect()
        owned, temp = False, None
    else:
        temp = Path(tempfile.mkdtemp(prefix="px-ray-"))   # short: Ray's socket paths have a length limit
        start_local_ray(resolved, temp, metrics_port)
        owned = True
    try:
        yield
    finally:
        if owned:
            ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def _deployment(resolved: Resolved, port: int, console: Console) -> Iterator[tuple[str, str]]:
    """(the proxy's URL, what the load generator sends to: the ingress replicas' own addresses if any).
    Each configuration's state is printed whenever it changes while the deployment starts."""
    def show(progress: list[ConfigProgress]) -> None:
        for p in progress:
            console.print(f"  {p.line()}", highlight=False)

    try:
        dep = deploy(resolved, host="127.0.0.1", port=port, on_progress=show)
        yield dep.url, dep.target
    finally:
        teardown()


@dataclass(frozen=True)
class _Ports:
    """The metrics ports of one run on 127.0.0.1 (Prometheus scrapes them)."""
    ray: int
    loadgen: int
    controller: int


def run_scenario(resolved: Resolved, root: Path = Path("runs"), console: Console | None = None,
                 live: bool = True, on_started: Callable[[Controller], None] | None = None) -> RunResult:
    """Run a whole scenario and write its run folder; returns where it is."""
    console = console or Console()
    s = resolved.scenario
    folder = run_folder(root, s.name)
    (folder / rf.SCENARIO_YAML).write_text(yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False))
    console.print(f"run folder: {folder}")
    ports = _Ports(free_port(), free_port(), free_port())
    interrupted = False
    error: str | None = None
    controller: Controller | None = None
    capacities: dict[tuple[str, str], float] = {}
    predictor = threading.Thread(target=lambda: capacities.update(planned_capacities(resolved)),
                                 name="parallax-capacity", daemon=True)
    if s.plan is None:   # a planned comparison brings its predictions; nothing competes with its live load
        predictor.start()   # the simulator's capacities, computed while Ray starts and deploys
    with ExitStack() as stack:
        try:
            console.print(f"starting Ray and deploying the configurations (waiting up to "
                          f"{s.resolved_deploy_timeout_s:g} s: server.deploy_timeout_s) …")
            stack.enter_context(_ray(resolved, ports.ray))
            url, target = stack.enter_context(_deployment(resolved, port_or_free(s.server.port), console))
            console.print(f"ingress: {url}" + (f" (load sent directly to {target})" if target != url else ""))
            controller, prom = _start_controller(resolved, folder, url, ports, capacities, stack, console)
            load = LoadControl()
            if s.faults:
                schedule = _start_faults(s, folder, controller, prom, load, console)
                stack.callback(lambda: schedule.stop(0.0 if interrupted else FOLLOW_S))  # first, after the load
            if on_started is not None:
                on_started(controller)
            interrupted = _drive_load(resolved, target, folder, ports.loadgen, controller, console, live, load)
        except KeyboardInterrupt:
            interrupted = True
            console.print("[yellow]interrupted: tearing down and writing the run folder[/]")
        except Exception as e:  # report what failed, still tear down and write what there is
            error = f"{type(e).__name__}: {e}"
            log.debug("run failed", exc_info=True)
    if controller is not None:
        console.print(f"{len(controller.decisions)} routing decisions")
    if predictor.is_alive():
        predictor.join()
    report, error = _write_results(resolved, folder, console, error)
    return RunResult(folder, report, interrupted, error)


def _start_prometheus(s: Scenario, folder: Path, ports: _Ports, stack: ExitStack, console: Console
                      ) -> PrometheusHandle:
    """Prometheus with the recording rules, at the controller's window: the scoreboard and the dashboards
    read their series. A Prometheus of the user's own (monitoring.prometheus_url) must load them itself."""
    rules = scoreboard_rules(s)
    if s.monitoring.prometheus_url:
        prom = attach_prometheus(s.monitoring.prometheus_url, folder)
        path = write_rules(Path(prom.folder) / "rules.yml", rules)
        console.print(f"[yellow]attached Prometheus: the controller reads the recording rules in {path}; "
                      "load them into it (rule_files) or the scoreboard stays empty[/]")
        return prom
    targets = [ScrapeTarget("ray", ports.ray), ScrapeTarget("loadgen", ports.loadgen),
               ScrapeTarget("controller", ports.controller)]
    prom = start_prometheus(folder, targets, rules, scrape_interval_s=s.monitoring.scrape_interval_s)
    stack.callback(stop_prometheus, prom)
    return prom


def _start_controller(resolved: Resolved, folder: Path, url: str, ports: _Ports,
                      capacities: dict[tuple[str, str], float], stack: ExitStack, console: Console
                      ) -> tuple[Controller, PrometheusHandle]:
    """The controller's metrics endpoint, Prometheus and the dashboards, then the controller itself (with
    the simulator's `capacities`, filled in as they come), routing evenly until it has evidence; everything
    is stopped by `stack`."""
    s = resolved.scenario
    metrics = ControllerMetrics()
    server, thread = start_http_server(ports.controller, addr="127.0.0.1", registry=metrics.registry)
    stack.callback(thread.join, 5)
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    prom = _start_prometheus(s, folder, ports, stack, console)
    console.print(f"prometheus: {prom.url}")
    export_dashboards(folder / "dashboards", prom.url, s.monitoring.scrape_interval_s)
    client = stack.enter_context(PromClient(prom.url))
    router = HttpRouter(url, api_key=os.environ.get(s.server.api_key_env) if s.server.api_key_env else None)
    stack.callback(router.close)
    controller = Controller(s, prom_query(client), router, folder, metrics,
                            health=lambda: unhealthy_configs(controller.configs), serving_set=live_set_reader())
    controller.capacities = capacities
    controller.apply_initial()
    controller.start()
    stack.callback(controller.stop)
    if s.controller.policy == "repartition":
        serve_fleet = ServeFleet(resolved, on_set=lambda configs: reload_rules(prom, scoreboard_rules(s, configs)))
        policy = for_run(resolved, controller, serve_fleet, serve_fleet.start_s, serve_fleet.drain_s, folder)
        policy.start()
        stack.callback(policy.stop)   # before the controller stops: a transition under way finishes or rolls back
        console.print(f"repartition: re-planning every {s.controller.repartition.interval_s:g} s; decisions in "
                      f"{folder / REPARTITION_JSONL}")
    return controller, prom


def _start_faults(s: Scenario, folder: Path, controller: Controller, prom: PrometheusHandle, load: LoadControl,
                  console: Console) -> FaultSchedule:
    """The scenario's faults, applied on the load's schedule and exported beside the controller's metrics; to be
    stopped (every record written) before the controller, Prometheus and the deployment."""
    schedule = FaultSchedule(s, folder, controller.metrics.registry, load, controller,
                             None if prom.attached else lambda: restart_prometheus(prom),
                             say=lambda line: console.print(f"[magenta]{escape(line)}[/]"))
    schedule.start()
    console.print(f"{len(s.faults)} faults scheduled; what happens is written to {folder / FAULTS_JSONL}")
    return schedule


def _write_results(resolved: Resolved, folder: Path, console: Console, error: str | None
                   ) -> tuple[Path | None, str | None]:
    """The what-if (and, for a re-partitioned schedule, the offline references) and the report, whatever happened
    before; the first error stays the one reported."""
    try:
        write_whatif(resolved, folder)
    except Exception as e:  # the report is still worth having without the prediction
        error = error or f"the what-if failed: {type(e).__name__}: {e}"
    s = resolved.scenario
    if s.load.phases and s.controller.policy == "repartition" and s.controller.repartition.compare_offline:
        console.print("replaying the run's requests on the best static deployment and the per-phase oracle "
                      "(parallax compare-shift)")
        try:
            with runner() as pool:
                write_comparison(folder, compare_shift(resolved, read_records(folder / rf.RECORDS_JSONL), pool))
        except Exception as e:
            error = error or f"the offline comparison failed: {type(e).__name__}: {e}"
    report = None
    try:
        report = render_report(folder)
        console.print(f"report: {report}")
    except Exception as e:
        error = error or f"writing the report failed: {type(e).__name__}: {e}"
    return report, error


def _drive_load(resolved: Resolved, url: str, folder: Path, metrics_port: int, controller: Controller,
                console: Console, live: bool, control: LoadControl) -> bool:
    """Run the scenario's load with the live view; Ctrl-C stops it gracefully. True when interrupted."""
    s = resolved.scenario
    base_dir = Path(resolved.source).parent
    done = [0]
    t0 = time.time()
    total_s = s.load.planned_s

    def status() -> str:
        return f"load {time.time() - t0:.0f}/{total_s:.0f}s · {done[0]} requests done"

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            await run_load(url, list(s.classes), s.load, folder, metrics_port=metrics_port, stop=stop,
                           on_record=lambda _: done.__setitem__(0, done[0] + 1), base_dir=base_dir,
                           tokenizer=_local_tokenizer(s), time_scale=s.engine.clock_scale,
                           api_key=os.environ.get(s.server.api_key_env) if s.server.api_key_env else None,
                           control=control)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        return stop.is_set()

    if not live:
        return asyncio.run(main())
    with Live(get_renderable=lambda: render(controller, status()), console=console, refresh_per_second=1,
              transient=False):
        return asyncio.run(main())


def _local_tokenizer(s: Scenario) -> Path | None:
    """The real engine's model folder, so that prompts have the planned number of tokens for its tokenizer."""
    path = Path(s.engine.model_path) if s.engine.kind == "vllm" and s.engine.model_path else None
    return path if path is not None and path.is_dir() else None
