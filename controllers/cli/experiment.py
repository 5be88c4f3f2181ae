"""`parallax report` and `parallax compare`: thin CLI layers over controllers.report."""

import time
from pathlib import Path

import typer

from controllers import runfolder as rf
from controllers.browser_check import check_page
from controllers.cli.terminal import console, fail
from controllers.plan.evaluate import PlanError
from controllers.plan.parallel import runner
from controllers.report import RunFolderError, compare_runs, read_run, render_report
from controllers.run import run_scenario
from controllers.shift_compare import compare_shift, comparison_lines, write_comparison
from deployments.resolve import load_scenario
from loadgen.records import read_records
from schema.scenario import ScenarioError


def report_cmd(run_dir: Path = typer.Argument(..., help="run folder written by `parallax run`"),
               check: bool = typer.Option(False, help="open the page in headless Chromium and check it")) -> None:
    """Re-render report.html (and its figures) from a run folder."""
    try:
        page = render_report(run_dir)
    except RunFolderError as e:
        fail(str(e))
    console.print(f"report: {page}")
    if check:
        result = check_page(page)
        if not result.ok:
            fail(f"{page}: the page does not render cleanly: broken figures {result.broken}, "
                 f"console errors {result.console_errors}")
        console.print(f"checked in Chromium: {result.images} figures render, no console errors")


def compare_shift_cmd(run_dir: Path = typer.Argument(..., help="run folder of a scenario with load.phases"),
                      workers: int | None = typer.Option(None, help="planner worker processes (default: one per "
                                                         "CPU core)")) -> None:
    """Replay a shifting run's requests offline on the best static deployment and on the per-phase oracle, write
    shift_compare.json and re-render the report beside the live result."""
    try:
        read_run(run_dir)
        resolved = load_scenario(run_dir / rf.SCENARIO_YAML)
    except (RunFolderError, ScenarioError) as e:
        fail(str(e))
    if not resolved.scenario.load.phases:
        fail(f"{run_dir}: load.phases: the comparison is per phase of a schedule, and this run had none")
    try:
        with runner(workers) as r:
            c = compare_shift(resolved, read_records(run_dir / rf.RECORDS_JSONL), r)
    except PlanError as e:
        fail(f"{run_dir}: planning a reference failed: {e}")
    for what, per_phase, overall, deployment in comparison_lines(c):
        console.print(f"{what}: {overall:.2f} req/s overall; per phase "
                      + ", ".join(f"{n} {g:.2f}" for n, g in zip(c.phases, per_phase, strict=True))
                      + f" ({deployment})", highlight=False)
    console.print(f"written: {write_comparison(run_dir, c)}; report: {render_report(run_dir)}")


def compare_cmd(run_dirs: list[Path] = typer.Argument(..., help="two or more run folders"),
                out: Path | None = typer.Option(None, help="HTML file to write (default: runs/compare-<time>.html)")
                ) -> None:
    """Set several runs side by side (outcome per class and configuration)."""
    target = out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        page = compare_runs(run_dirs, target)
    except RunFolderError as e:
        fail(str(e))
    console.print(f"comparison: {page}")


def run_cmd(scenario: Path = typer.Argument(..., help="scenario YAML file"),
            out: Path = typer.Option(Path("runs"), help="folder that receives the run folder"),
            live: bool = typer.Option(True, help="live terminal view of the scoreboard and decisions"),
            check: bool = typer.Option(False, help="check the report in headless Chromium afterwards")) -> None:
    """Deploy, drive the scenario's load with the controller routing, write the run folder, tear down."""
    try:
        resolved = load_scenario(scenario, serving=True)
        result = run_scenario(resolved, out, console, live=live)
    except ScenarioError as e:
        fail(str(e))
    if result.error:
        fail(f"run failed: {result.error}; what was recorded is in {result.folder}")
    if result.interrupted:
        console.print(f"[yellow]interrupted[/]; partial run written to {result.folder}")
    if check and result.report is not None:
        page = check_page(result.report)
        if not page.ok:
            fail(f"{result.report}: the page does not render cleanly: broken figures {page.broken}, "
                 f"console errors {page.console_errors}")
        console.print(f"checked in Chromium: {page.images} figures render, no console errors")
