"""Live terminal view of a load run: a progress bar over the run's length and a per-(config, class) table."""

import time
from collections import defaultdict

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from loadgen.records import RequestRecord


def _ms(values: list[float]) -> str:
    return f"{np.percentile(values, 50) * 1000:.0f}" if values else "-"


class LiveView:
    """Counts records as they come and redraws a few times a second."""

    def __init__(self, total_s: float, console: Console | None = None):
        self.progress = Progress(TextColumn("[bold]load"), BarColumn(), TextColumn("{task.description}"),
                                 TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("", total=total_s)
        self.t0 = time.monotonic()
        self.step = ""
        self.groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # done, ok, slo met
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "LiveView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.refresh()
        self.live.__exit__(None, None, None)

    def add(self, r: RequestRecord) -> None:
        key = (r.config, r.sla_class)
        c = self.counts[key]
        c[0] += 1
        c[1] += r.status == "ok"
        c[2] += r.slo_met
        if r.status == "ok" and r.ttft_s is not None:
            self.groups[key]["ttft"].append(r.ttft_s)
            if r.tpot_s is not None:
                self.groups[key]["tpot"].append(r.tpot_s)

    def set_step(self, text: str) -> None:
        self.step = text

    def refresh(self) -> None:
        self.progress.update(self.task, completed=time.monotonic() - self.t0, description=self.step)
        self.live.update(self._render())

    def _render(self) -> Group:
        t = Table("config", "class", "done", "ok", "p50 TTFT ms", "p50 TPOT ms", "SLO met")
        for key in sorted(self.counts):
            done, ok, met = self.counts[key]
            g = self.groups[key]
            t.add_row(*key, str(done), str(ok), _ms(g["ttft"]), _ms(g["tpot"]), f"{met / done:.0%}")
        return Group(self.progress, t)
