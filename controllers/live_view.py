"""The live terminal view of `parallax run`: scoreboard per (configuration, class) and routing decisions."""

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from controllers.controller import Controller


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:.0f}"


def render(c: Controller, status: str = "") -> Group:
    """A rich renderable of the controller's current state."""
    board, state = c.board, c.state
    age = time.time() - board.time
    head = Text(f"{c.scenario.name} · policy {c.cfg.policy} · {status}  ")
    head.append("STALE: " + (board.error or "") if board.stale else f"scoreboard {age:.0f}s old",
                style="bold red" if board.stale else "green")
    t = Table("class", "config", "weight", "n", "req/s", "attain", "goodput", "p90 TTFT ms", "p90 TPOT ms",
              "tok/s/GPU", "queue", "KV", title=f"window {c.cfg.window_s:g}s", expand=False)
    for cls, slo in c.slos.items():
        for cfg in c.configs:
            p = board.pair(cfg, cls)
            w = state.weights.get(cls, {}).get(cfg, 0.0)
            att = "–" if p.attainment is None else f"{p.attainment:.0%}"
            style = "" if p.attainment is None else ("green" if slo.attained(p.attainment) else "red")
            t.add_row(cls, cfg, f"{w:.2f}", str(p.samples), f"{p.request_rate:.2f}", Text(att, style=style),
                      f"{p.goodput:.2f}", _ms(p.ttft.p90), _ms(p.tpot.p90), f"{p.output_tps_per_gpu:.0f}",
                      "–" if p.queue_depth is None else f"{p.queue_depth:.0f}",
                      "–" if p.kv_usage is None else f"{p.kv_usage:.0%}",
                      style="bold" if w == max(state.weights.get(cls, {0: 0}).values()) else None)
    lines = [Text(f"{time.strftime('%H:%M:%S', time.localtime(d.time))} {d.sla_class} → {d.chosen}: {d.reason}")
             for d in c.decisions[-6:]]
    if c.router_error:
        lines.append(Text(f"routing update failed: {c.router_error}", style="red"))
    return Group(head, t, Text("decisions:", style="bold"), *(lines or [Text("  (none yet)")]))
