"""The report's Re-partitioning section: the policy's moves with their predicted and realised gains, the steps of
each transition, every decision (folded), and the timeline figure (controllers/figures.py), from the run folder's
repartition.jsonl and its records."""

import html
from collections.abc import Sequence
from pathlib import Path

from controllers import figures
from controllers.records import Rec
from controllers.repartition_log import DecisionLine, RealisedLine, StepLine, TransitionLine, read_lines
from controllers.shift_compare import ShiftComparison, comparison_lines, ratios, read_comparison
from schema.scenario import Scenario

TIMELINE_PNG = "repartition_timeline.png"


def _gain(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1%}"


def timeline_series(records: Sequence[Rec], classes: Sequence[str], time_scale: float, t0: float, bin_s: float
                    ) -> tuple[list[float], dict[str, list[float]], dict[str, list[float | None]]]:
    """Bins of `bin_s` wall seconds from `t0` (wall) by send time: each class's arrivals/s and SLO attainment."""
    if not records:
        return [], {}, {}
    end = max(r.start_s * time_scale for r in records) - t0
    n = int(end // bin_s) + 1
    sent = {c: [0] * n for c in classes}
    met = {c: [0] * n for c in classes}
    for r in records:
        if r.sla_class in sent:
            i = int((r.start_s * time_scale - t0) // bin_s)
            sent[r.sla_class][i] += 1
            met[r.sla_class][i] += int(r.slo_met)
    times = [i * bin_s for i in range(n)]
    rates = {c: [x / bin_s for x in sent[c]] for c in classes}
    attainment = {c: [m / s if s else None for m, s in zip(met[c], sent[c], strict=True)] for c in classes}
    return times, rates, attainment


def repartition_section(folder: Path, scenario: Scenario, records: Sequence[Rec]) -> str:
    """The section's HTML (empty when the run has no repartition.jsonl); draws the timeline into `folder`."""
    lines = read_lines(folder)
    comparison = read_comparison(folder)
    if not lines:
        return f"<h2>Re-partitioning</h2>{_comparison_table(comparison)}" if comparison else ""
    decisions = [x for x in lines if isinstance(x, DecisionLine)]
    k = scenario.engine.clock_scale
    t0 = min([r.start_s * k for r in records] + [x.time for x in lines])
    ended = {x.decision: x for x in lines if isinstance(x, TransitionLine)}
    realised = {x.decision: x for x in lines if isinstance(x, RealisedLine)}
    moves = [d for d in decisions if d.outcome == "move"]
    rows = []
    for d in moves:
        t = ended.get(d.decision)
        r = realised.get(d.decision)
        outcome = "–" if t is None else ("reached" if t.reached else "rolled back") + f" in {t.seconds:.0f} s"
        rows.append(f"<tr><td>{d.time - t0:.0f}</td><td class=l>{html.escape(' + '.join(d.current))} → "
                    f"{html.escape(' + '.join(d.best))}</td><td class=l>{html.escape(d.reason)}</td>"
                    f"<td>{_gain(d.predicted_gain)}</td><td>{_gain(r.realised_gain if r else None)}</td>"
                    f"<td class=l>{outcome}{'<br>' + html.escape(t.reason) if t and not t.reached else ''}</td></tr>")
    table = ("<table><tr><th>t (s)</th><th class=l>from → to</th><th class=l>why</th><th>predicted gain</th>"
             f"<th>realised gain</th><th class=l>transition</th></tr>{''.join(rows)}</table>" if rows
             else "<p>No move was made.</p>")
    steps = [x for x in lines if isinstance(x, StepLine)]
    step_rows = "".join(
        f"<tr><td>{s.time - t0:.0f}</td><td>{s.decision}</td><td>{s.seconds:.1f}</td><td class=l>"
        f"{'rollback: ' if s.rollback else ''}{html.escape(s.line)}"
        f"{' <b class=bad>' + html.escape(s.error) + '</b>' if s.error else ''}</td></tr>" for s in steps)
    step_table = ("<h3>Steps</h3><table><tr><th>ended at (s)</th><th>decision</th><th>seconds</th><th class=l>step"
                  f"</th></tr>{step_rows}</table>" if steps else "")
    every = "".join(
        f"<tr><td>{d.time - t0:.0f}</td><td class=l>{d.outcome}</td><td class=l>{html.escape(d.reason)}</td>"
        f"<td>{d.rate:.2f}</td><td class=l>{', '.join(f'{c} {s:.0%}' for c, s in d.shares.items())}</td>"
        f"<td>{d.stay_goodput:.2f}</td><td>{d.best_goodput:.2f}</td><td>{d.cost:.0f}</td>"
        f"<td>{_gain(d.predicted_gain)}</td><td>{d.plan_s:.1f}</td></tr>" for d in decisions)
    folded = ("<details><summary>every decision</summary><table><tr><th>t (s)</th><th class=l>outcome</th>"
              "<th class=l>why</th><th>forecast rate</th><th class=l>forecast mix</th><th>stay goodput</th>"
              "<th>best goodput</th><th>cost (requests)</th><th>predicted gain</th><th>re-plan (s)</th></tr>"
              f"{every}</table></details>")
    classes = [c.name for c in scenario.classes]
    bin_s = max(scenario.controller.window_s, scenario.controller.repartition.interval_s)
    times, rates, attainment = timeline_series(records, classes, k, t0, bin_s)
    gpus = [(d.time - t0, d.gpus) for d in decisions] + [(x.time - t0, x.gpus) for x in ended.values()]
    bands = [(d.time - t0, ended[d.decision].time - t0, ended[d.decision].reached) for d in moves
             if d.decision in ended]
    end = max([t + bin_s for t in times[-1:]] + [t for t, _ in gpus])
    fig = figures.repartition_timeline(times, rates, attainment, sorted(gpus, key=lambda g: g[0]), bands, end,
                                       folder / TIMELINE_PNG)
    cfg = scenario.controller.repartition
    return (f"<h2>Re-partitioning</h2><p class=note>Policy repartition: every {cfg.interval_s:g} s the forecast "
            f"traffic ({cfg.forecast.kind}, {cfg.forecast.horizon_s:g} s ahead) is re-planned; a move needs a "
            f"predicted gain of {cfg.min_gain:.0%} over staying (over the horizon, the transition's cost counted) "
            f"held for {cfg.min_dwell_s:g} s, at most {cfg.max_moves_per_hour} an hour. {len(decisions)} decisions, "
            f"{len(moves)} moves. Predicted gain: (goodput of the best split − the transition's cost − goodput "
            "staying) ÷ goodput staying; realised: goodput measured over a window after the move ÷ the goodput "
            f"predicted for staying − 1 (repartition.jsonl).</p>{table}{step_table}{folded}"
            f"{_comparison_table(comparison) if comparison else ''}"
            f"<h3>Timeline</h3><img src='{fig.name}' alt='re-partitioning timeline'>")




def _comparison_table(c: ShiftComparison) -> str:
    """The live run beside the best static deployment and the per-phase oracle, replayed on its requests."""
    head = "".join(f"<th>{html.escape(p)}</th>" for p in c.phases)
    rows = "".join(f"<tr><td class=l>{html.escape(what)}</td>{''.join(f'<td>{g:.2f}</td>' for g in per_phase)}"
                   f"<td><b>{overall:.2f}</b></td><td class=l>{html.escape(dep)}</td></tr>"
                   for what, per_phase, overall, dep in comparison_lines(c))
    r = ratios(c)
    said = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if v is not None)
    return ("<h3>Against the offline references</h3><p class=note>Goodput (req/s meeting their SLO, engine clock) "
            "per phase and overall: this run as measured; the best static deployment for the whole schedule and "
            "the per-phase oracle (moves free), each replayed offline on this run's requests "
            f"(`parallax compare-shift`, shift_compare.json). Overall: {said}.</p>"
            f"<table><tr><th class=l></th>{head}<th>overall</th><th class=l>deployment</th></tr>{rows}</table>")
