"""`parallax plan --verify K`: the plan's top K deployed side by side and measured live (`parallax run` of the
proposal), then the predicted ranking set against the measured one."""

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from controllers.plan.live import PlanVsLive, compare
from controllers.report import read_run
from controllers.run import run_scenario
from deployments.resolve import Resolved, check_scenario
from schema.scenario import Scenario


@dataclass(frozen=True)
class Verification:
    folder: Path
    report: Path | None
    comparison: PlanVsLive | None
    seconds: float              # wall time of the live run (start, deploy, load, teardown, report)
    error: str | None


def verify(resolved: Resolved, scenario: Scenario, root: Path, console: Console, live: bool = False) -> Verification:
    """Run a plan's proposal (`proposal.proposal`) live on its engine and compare; the run folder holds the
    whole record."""
    t0 = time.perf_counter()
    base = Path(resolved.source).parent
    checked = check_scenario(scenario, resolved.source, base)
    result = run_scenario(checked, root, console, live=live)
    run = read_run(result.folder)
    return Verification(result.folder, result.report, compare(run.scenario, run.records),
                        time.perf_counter() - t0, result.error)
