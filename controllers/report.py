"""`report.html` of a run folder (re-rendered at will), and side-by-side comparison of runs."""

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from controllers import figures
from controllers import runfolder as rf
from controllers.faults.blast_radius import WINDOWS, FaultImpact, impacts, load_span, timeline
from controllers.faults.record import FAULTS_JSONL, FaultRecord, read_faults
from controllers.plan.live import compare
from controllers.records import Rec, Summary, load_records, summarize
from controllers.repartition_report import repartition_section
from loadgen.lengths import mean_lengths
from loadgen.records import read_records
from loadgen.summary import rescore
from schema.scenario import Scenario

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}.ok{color:#070}.bad{color:#b00}.chosen{font-weight:bold}
img{max-width:100%;display:block;margin:0.5em 0 1.5em}.note{color:#555;font-size:0.9em}"""


class RunFolderError(ValueError):
    """A folder that is not a readable run folder."""


@dataclass(frozen=True)
class Run:
    folder: Path
    scenario: Scenario
    records: list[Rec]
    scoreboard: list[dict[str, Any]]
    weights: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    whatif: dict[str, Any]
    faults: list[FaultRecord]

    @property
    def t0(self) -> float:
        """Wall-clock start of the controller's time series."""
        return min((float(r["time"]) for r in self.weights), default=0.0)

    def final_weights(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        last = max((float(r["time"]) for r in self.weights), default=None)
        for r in self.weights:
            if float(r["time"]) == last:
                out.setdefault(str(r["sla_class"]), {})[str(r["config"])] = float(r["weight"])
        return out


def read_run(folder: Path) -> Run:
    """Everything the report needs from a run folder."""
    path = folder / rf.SCENARIO_YAML
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder; give a folder under runs/")
    if not path.exists():
        raise RunFolderError(f"{folder}: no {rf.SCENARIO_YAML}; is this a run folder written by `parallax run`?")
    try:
        scenario = Scenario.model_validate(yaml.safe_load(path.read_text()))
    except Exception as e:
        raise RunFolderError(f"{path}: not a valid resolved scenario ({e})") from None
    whatif_path = folder / rf.WHATIF_JSON
    records = load_records(folder / rf.RECORDS_JSONL, scenario.engine.clock_scale,
                           {c.name: c.slo for c in scenario.classes})
    return Run(
        folder=folder, scenario=scenario, records=records,
        scoreboard=rf.read_csv(folder / rf.SCOREBOARD_CSV), weights=rf.read_csv(folder / rf.WEIGHTS_CSV),
        decisions=rf.read_jsonl(folder / rf.DECISIONS_JSONL),
        whatif=json.loads(whatif_path.read_text()) if whatif_path.exists() else {},
        faults=read_faults(folder),
    )


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:.0f}"


def _duration(run: Run) -> float:
    """One sweep step, in engine seconds."""
    return run.scenario.load.duration_s / run.scenario.engine.clock_scale


def class_outcome(run: Run) -> list[dict[str, Any]]:
    """Per (class, configuration): measured figures over the whole run, routing share, prediction."""
    final = run.final_weights()
    preds = {(p["sla_class"], p["config"]): p for p in run.whatif.get("predictions", [])}
    rows = []
    for tc in run.scenario.classes:
        for c in run.scenario.configurations:
            recs = [r for r in run.records if r.sla_class == tc.name and r.config == c.name]
            w = final.get(tc.name, {}).get(c.name)
            rows.append({"sla_class": tc.name, "config": c.name, "summary": summarize(recs), "weight": w,
                         "prediction": preds.get((tc.name, c.name))})
    return rows


def _error(x: float | None, what: str) -> str:
    return "" if x is None else f", {what} {x:+.0%}"


def verdict(p: Mapping[str, Any] | None) -> str:
    """Prediction vs measurement of one cell, as HTML: the replay's attainment against the measured one over
    the same requests, and the simulator's median per-request TTFT / TPOT error."""
    if p is None or "requests" not in p:
        return html.escape(p["error"]) if p and "error" in p else "–"
    lo, hi = p["interval"]
    figures = (f"predicted {p['attainment']:.0%}, measured {p['measured_attainment']:.0%} of {p['requests']} "
               f"requests (95% interval {lo:.0%}–{hi:.0%}); {p['flipped']} judged differently"
               f"{_error(p.get('ttft_error'), 'TTFT')}{_error(p.get('tpot_error'), 'TPOT')} per request (median, "
               f"against the {p.get('error_basis', 'client')}'s figures)")
    word = "<span class=ok>agree</span>" if p["agrees"] else "<span class=bad>disagree</span>"
    return f"{word}: {figures}"


def _outcome_table(run: Run) -> str:
    rows = class_outcome(run)
    final = run.final_weights()
    head = ("<tr><th class=l>class</th><th class=l>config</th><th>final weight</th><th>requests</th>"
            "<th>errors</th><th>attainment</th><th>goodput (req/s)</th><th>p90 TTFT (ms)</th>"
            "<th>p90 TPOT (ms)</th><th>predicted attainment</th><th>predicted headroom</th>"
            "<th>predicted capacity (req/s)</th>"
            "<th class=l>prediction vs measurement (the requests it received, replayed)</th></tr>")
    body = []
    for r in rows:
        s: Summary = r["summary"]
        slo = run.scenario.class_named(r["sla_class"]).slo
        meets = s.n > 0 and slo.attained(s.attainment)
        p = r["prediction"]
        shares = final.get(r["sla_class"], {})
        chosen = r["weight"] is not None and r["weight"] == max(shares.values(), default=None)
        cls = "chosen" if chosen else ""
        body.append(
            f"<tr class='{cls}'><td class=l>{html.escape(r['sla_class'])}</td><td class=l>{html.escape(r['config'])}"
            f"</td><td>{_f(r['weight'])}</td><td>{s.n}</td><td>{s.errors}</td>"
            f"<td class={'ok' if meets else 'bad'}>{_f(s.attainment, '{:.0%}') if s.n else '–'}</td>"
            f"<td>{_f(s.goodput)}</td><td>{_ms(s.ttft_p90)}</td><td>{_ms(s.tpot_p90)}</td>"
            f"<td>{_f(p.get('attainment'), '{:.0%}') if p else '–'}</td>"
            f"<td>{_f(p['headroom'], '{:+.0%}') if p and p.get('headroom') is not None else '–'}</td>"
            f"<td>{_f(p.get('capacity')) if p else '–'}</td>"
            f"<td class=l>{verdict(p)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def study_comparison(run: Run) -> list[str]:
    """Per class: which configuration the simulator says carries it furthest within its SLO and which is
    fastest, set against the study's findings (the highest TP gives the lowest latency; deep PP gives
    the most throughput)."""
    s = run.scenario
    shape = {c.name: (c.tp, c.pp) for c in s.configurations}
    highest_tp = max(shape, key=lambda c: (shape[c][0], -shape[c][1]))
    deepest_pp = max(shape, key=lambda c: (shape[c][1], -shape[c][0]))
    out = []
    for tc in s.classes:
        preds = [p for p in run.whatif.get("predictions", []) if p["sla_class"] == tc.name and "capacity" in p]
        if not preds:
            continue
        ranked = sorted(preds, key=lambda p: -p["capacity"])
        leader = ranked[0]["config"]
        caps = ", ".join(f"{p['config']} {p['capacity']:.1f}" for p in ranked)
        alone = [p for p in preds if p.get("alone", {}).get("ttft_p90") is not None]
        fastest = min(alone, key=lambda p: p["alone"]["ttft_p90"])["config"] if alone else None
        line = (f"<b>{html.escape(tc.name)}</b>: capacity within its SLO (req/s, engine clock): {caps}. "
                f"Lowest predicted p90 TTFT: {fastest or '–'}.")
        if fastest is not None and fastest != highest_tp:
            line += (f" The study finds the highest TP fastest; here {fastest} beats {highest_tp}: under continuous "
                     "batching a long prompt's chunks stream through the PP stages while TP pays an all-reduce per "
                     "layer (see the cost terms).")
        if leader == deepest_pp and shape[deepest_pp][1] > 1:
            line += f" As the study finds, deep PP ({leader}) carries the most traffic."
        elif leader == highest_tp and fastest == highest_tp:
            line += (f" As the study finds, TP gives latency: {leader} is the fastest, and this class's latency "
                     "targets, not throughput, limit how much traffic a configuration carries.")
        elif shape[deepest_pp][1] > 1:
            line += (f" The study finds deep PP gives throughput; here {deepest_pp} is not the capacity leader. "
                     "With continuous batching and memory to spare, PP does not shorten a pass, each micro-batch "
                     "re-reads its stage's weights, and a request waits for every stage in turn; TP pays its "
                     "all-reduce instead (see the cost terms). The simulator disagrees with the study here, and "
                     "the routing follows the measurement, not the study.")
        out.append(line)
    return out


def _path_table(run: Run) -> str:
    """Client-side TTFT against the server's own, per configuration (engine clock): what the path added."""
    rows = []
    for c in run.scenario.configurations:
        both = [r for r in run.records if r.config == c.name and r.ok and r.ttft_s is not None
                and r.server_ttft_s is not None]
        if not both:
            continue
        client = np.array([r.ttft_s for r in both])
        server = np.array([r.server_ttft_s for r in both])
        mean, p50 = client.mean() / server.mean() - 1, np.median(client) / np.median(server) - 1
        rows.append(f"<tr><td>{html.escape(c.name)}</td><td>{len(both)}</td>"
                    f"<td>{_ms(client.mean())} / {_ms(np.median(client))}</td>"
                    f"<td>{_ms(server.mean())} / {_ms(np.median(server))}</td><td>{mean:+.1%} / {p50:+.1%}</td></tr>")
    if not rows:
        return "<p>The server reported no TTFT of its own (a Parallax ingress puts it in each response's usage).</p>"
    return ("<table><tr><th>configuration</th><th>requests</th><th>client TTFT mean / p50 (ms)</th>"
            "<th>server's own mean / p50 (ms)</th><th>client ÷ server − 1</th></tr>" + "".join(rows) + "</table>")


def _plan_vs_live(run: Run) -> str:
    """Predicted rank and capacity of each planned deployment against the live run's."""
    pvl = compare(run.scenario, run.records)
    if pvl is None:
        return ""
    plan = run.scenario.plan
    assert plan is not None
    unit = "req/s per GPU" if plan.split == "per-gpu" else "req/s per deployment"
    ladder = ", ".join(f"{x:.2f}" for x in pvl.rates_per_unit)
    head = ("<tr><th>predicted rank</th><th class=l>deployment</th><th>GPUs</th><th>predicted capacity (req/s)</th>"
            "<th>live: steps met</th><th>live capacity (req/s)</th><th>live rank</th>"
            + "".join(f"<th>step {j + 1}</th>" for j in range(len(pvl.rates_per_unit))) + "</tr>")
    rows = []
    for d in pvl.deployments:
        lo, hi = d.live_capacity
        cells = []
        for st in d.steps:
            att = ", ".join(f"{c} {a:.0%}" for c, a in st.attainment.items())
            mark = "–" if st.met is None else ("met" if st.met else "missed")
            agree = st.met is None or st.met == st.predicted
            cells.append(f"<td class={'ok' if agree else 'bad'}>{st.offered:.2f}/s: {mark}"
                         f"{' (predicted ' + ('met' if st.predicted else 'missed') + ')' if not agree else ''}"
                         f"<br><span class=note>{att}</span></td>")
        rows.append(f"<tr><td>{d.planned.rank}</td><td class=l>{html.escape(d.planned.label)}</td>"
                    f"<td>{d.planned.gpus}</td><td>{d.planned.max_rate:.2f} ± {d.planned.max_rate_std:.2f}</td>"
                    f"<td>{d.passed}/{len(d.steps)}</td><td>{lo:.2f} – {'∞' if hi is None else f'{hi:.2f}'}</td>"
                    f"<td class={'ok' if d.live_rank == d.planned.rank else 'bad'}>{d.live_rank}</td>"
                    f"{''.join(cells)}</tr>")
    sep, pairs = pvl.pairs_separated
    verdict = ("<span class=ok>the live ranking agrees with the plan</span>" if pvl.ranks_agree else
               "<span class=bad>the live ranking differs</span>: " + ", ".join(
                   f"#{a} ranked below #{b}" for a, b in pvl.inversions))
    return (f"<h2>Plan vs live</h2><p class=note>`parallax plan` ({plan.objective}) predicted each deployment's "
            f"capacity: the highest total rate at which every class meets its SLO. The live run offered each "
            f"deployment the same load ladder ({ladder} {unit}, engine clock; one rung every deployment should "
            f"meet, one between each pair of predicted capacities), every class split "
            f"{'by GPUs' if plan.split == 'per-gpu' else 'equally'} between them. A step is met when every class "
            f"meets its attainment target there, judged on the server's own TTFT and TPOT (engine clock; the Live "
            f"path table shows what the path added on top); 'predicted': the simulator run offline through the "
            f"same ladder."
            f"</p><p>{verdict} ({sep} of {pairs} pairs told apart by the steps met, the rest by the worst class "
            f"attainment at the first step missed); {pvl.steps_agree} of {pvl.steps_measured} "
            f"steps as predicted.</p><table>{head}{''.join(rows)}</table>")


def _decisions_table(run: Run) -> str:
    if not run.decisions:
        return "<p>No routing changes were made.</p>"
    rows = "".join(
        f"<tr><td>{float(d['time']) - run.t0:.1f}</td><td class=l>{html.escape(d['sla_class'])}</td>"
        f"<td class=l>{html.escape(str(d.get('chosen')))}</td><td class=l>"
        + ", ".join(f"{k} {v:.2f}" for k, v in d["weights"].items())
        + f"</td><td class=l>{html.escape(d['reason'])}</td></tr>"
        for d in run.decisions)
    return ("<table><tr><th>t (s)</th><th class=l>class</th><th class=l>routed to</th><th class=l>weights</th>"
            f"<th class=l>why (evidence in decisions.jsonl)</th></tr>{rows}</table>")


def _slo_text(run: Run) -> str:
    parts = []
    for tc in run.scenario.classes:
        slo = tc.slo
        t = [f"{k} ≤ {v:g} ms" for k, v in (("TTFT", slo.ttft_ms), ("TPOT", slo.tpot_ms), ("E2E", slo.e2e_ms))
             if v is not None]
        isl, osl = mean_lengths(tc)
        parts.append(f"<li><b>{html.escape(tc.name)}</b> ({tc.share:.0%} of requests, ~{isl:.0f} in / {osl:.0f} "
                     f"out tokens): {', '.join(t)} for {slo.attainment:.0%} of requests</li>")
    return "<ul>" + "".join(parts) + "</ul>"


Figure = tuple[str, Path, str]   # title, PNG, note (HTML)


def _figures(run: Run, folder: Path) -> list[Figure]:
    """Draw the run's figures into `folder`."""
    s = run.scenario
    classes = [c.name for c in s.classes]
    gpus = {c.name: c.gpus for c in s.configurations}
    figs: list[Figure] = []
    if run.records:
        dur = _duration(run)
        figs.append(("Latency vs throughput", figures.latency_vs_throughput(
            run.records, gpus, dur, folder / "latency_throughput.png"),
            "Each point is one step of the rate sweep, measured on the traffic routed to that configuration."))
        figs.append(("SLO attainment and goodput vs offered rate", figures.slo_vs_rate(
            run.records, classes, dur, folder / "slo_vs_rate.png"), ""))
        figs.append(("TTFT / TPOT distributions", figures.latency_cdfs(
            run.records, classes, {c.name: c.slo for c in s.classes}, folder / "latency_cdf.png"), ""))
    terms = run.whatif.get("cost_terms")
    if terms:
        figs.append(("Cost-term breakdown per configuration", figures.cost_terms(terms, folder / "cost_terms.png"),
                     html.escape(run.whatif.get("cost_note", ""))))
    if run.weights:
        figs.append(("Routing weights over time", figures.weights_over_time(
            run.weights, run.decisions, run.t0, folder / "routing_weights.png"), ""))
    if any(r.get("attainment") is not None for r in run.scoreboard):
        figs.append(("Live scoreboard", figures.scoreboard_over_time(
            run.scoreboard, run.t0, folder / "scoreboard.png"),
            "The controller's scoreboard: the recording rules' series, the numbers the dashboards show."))
    return figs


def _figures_html(figs: Sequence[Figure]) -> str:
    return "".join(f"<h3>{html.escape(t)}</h3><p class=note>{n}</p><img src='{p.name}' alt='{html.escape(t)}'>"
                   for t, p, n in figs)


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _count(x: float | None) -> str:
    """A number of requests, rounded (never "-0")."""
    return "–" if x is None else f"{round(x) + 0:d}"


def _faults_section(run: Run, folder: Path) -> str:
    """Per fault: when, what it hit, detect / drain / recover, failures and lost goodput; the blast radius of
    each configuration side by side; details per fault on demand; the goodput figure."""
    if not run.faults:
        return ""
    s = run.scenario
    raw = [r for r in read_records(folder / rf.RECORDS_JSONL) if not r.warmup] \
        if (folder / rf.RECORDS_JSONL).exists() else []
    records = rescore(raw, {c.name: c.slo for c in s.classes}, s.engine.clock_scale)
    found = impacts(run.faults, records, s, run.weights)
    start = load_span(records)[0]
    rows = []
    for rec in run.faults:
        imp = next((i for i in found if i.record is rec), None)
        f = rec.fault
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in rec.phases.items())
        what = html.escape(rec.detail if rec.ok else f"not applied: {rec.detail}") + (
            f"<br><span class=note>{html.escape(phases)}</span>" if phases else "")
        lost = imp.lost.get(f.target, None) if imp is not None and f.target else None
        rows.append(
            f"<tr><td>{rec.index}</td><td>{_secs(rec.applied_at - start if rec.applied_at else None)}</td>"
            f"<td class=l>{html.escape(f.label())}</td><td class=l>{what}</td><td>{_capacity_hit(s, imp)}</td>"
            f"<td>{_secs(imp.detect_s if imp else None)}</td><td>{_secs(imp.drain_s if imp else None)}</td>"
            f"<td>{_secs(imp.recover_s if imp else None)}</td><td>{len(imp.failed) if imp else '–'}</td>"
            f"<td>{_count(lost)}</td></tr>")
    table = ("<table><tr><th>#</th><th>applied at (s)</th><th class=l>fault</th><th class=l>what happened</th>"
             "<th>capacity hit</th><th>detect (s)</th><th>drain (s)</th><th>recover (s)</th><th>failed requests</th>"
             "<th>good requests lost by the configuration hit</th></tr>" + "".join(rows) + "</table>")
    return (f"<h2>Faults</h2><p class=note>The scenario's faults, applied on the load's schedule (faults.jsonl). "
            f"Detect: the first failure a client saw, or Serve noticing; drain: the controller's routing left the "
            f"configuration (not needed while other replicas serve: Serve routes around a dead one); recover: the "
            f"replacement runs, is routed again and served a request (a slowed GPU: back to speed). Capacity hit: "
            f"the share of the configuration's replicas the fault took down (or slowed), and for how long. Those "
            f"are wall seconds after the action on this machine. Goodput (req/s meeting the SLO, engine clock) is "
            f"counted by send time over {s.controller.window_s:g} s before the action, while the fault lasts, and "
            f"{s.controller.window_s:g} s after; 'lost' is the configuration's goodput before less its goodput "
            f"during, times how long the fault lasted: the good requests it did not deliver.</p>{table}"
            f"{_blast_radius(run, found)}{''.join(_fault_details(run, i) for i in found)}"
            f"{_figures_html([_faults_figure(run, records, found, start, folder)])}")


def _capacity_hit(s: Scenario, imp: FaultImpact | None) -> str:
    """The share of the hit configuration's replicas down (or slowed) and for how long: '100% for 30 s'."""
    c = next((c for c in s.configurations if imp is not None and c.name == imp.hit), None)
    if imp is None or c is None:
        return "–"
    during = imp.windows["during"].seconds
    return f"{1 / c.replicas:.0%} for {during:.0f} s" + (" (slowed)" if imp.record.fault.action == "slow_gpu" else "")


def _blast_radius(run: Run, found: Sequence[FaultImpact]) -> str:
    """Configurations side by side under each fault: goodput before → during → after, good requests lost."""
    if not found:
        return ""
    head = "".join(f"<th>#{i.record.index} {html.escape(i.record.fault.label())}</th>" for i in found)
    rows = []
    for c in run.scenario.configurations:
        cells = []
        for i in found:
            g = [i.config_goodput(c.name, w) for w in WINDOWS]
            tpot = [i.tpot_p90.get((c.name, w)) for w in WINDOWS]
            lost = i.lost.get(c.name)
            mark = " class=bad" if i.hit == c.name else ""
            cells.append(f"<td{mark}>{' → '.join(_f(x) for x in g)}<br><span class=note>lost "
                         f"{_count(lost)}; p90 TPOT {' → '.join(_ms(x) for x in tpot)} ms</span></td>")
        rows.append(f"<tr><td class=l>{html.escape(c.name)} (TP{c.tp}×PP{c.pp}×{c.replicas})</td>{''.join(cells)}</tr>")
    return ("<h3>Blast radius</h3><p class=note>Goodput of each configuration, every class (req/s, engine clock), "
            "before → during → after each fault, the good requests it lost, and the p90 TPOT of its requests "
            "(engine clock); the configuration a fault hit in red.</p>"
            f"<table><tr><th class=l>configuration</th>{head}</tr>{''.join(rows)}</table>")


def _fault_details(run: Run, imp: FaultImpact) -> str:
    """One fault per class and configuration, and its failed requests, folded."""
    w = imp.windows
    spans = ", ".join(f"{n} {w[n].seconds:.0f} s" for n in WINDOWS)
    rows = []
    for c in run.scenario.configurations:
        for k in run.scenario.classes:
            cells = "".join(f"<td>{_f(f.goodput)} / {_f(f.attainment, '{:.0%}')} / {_ms(f.tpot_p90)} "
                            f"({f.requests})</td>"
                            for f in (imp.figures[(c.name, k.name, n)] for n in WINDOWS))
            rows.append(f"<tr><td class=l>{html.escape(c.name)}</td><td class=l>{html.escape(k.name)}</td>{cells}</tr>")
    shown = imp.failed[:20]
    failed = "".join(f"<tr><td class=l>{html.escape(x.request_id)}</td><td class=l>{html.escape(x.config)}</td>"
                     f"<td class=l>{html.escape(x.sla_class)}</td><td class=l>{x.status}</td><td>{x.http_status or '–'}"
                     f"</td><td class=l>{html.escape(x.error or '')}</td></tr>" for x in shown)
    more = (f"<p class=note>… and {len(imp.failed) - len(shown)} more in records.jsonl.</p>"
            if len(imp.failed) > len(shown) else "")
    failures = ("<table><tr><th class=l>request</th><th class=l>config</th><th class=l>class</th><th class=l>status"
                f"</th><th>HTTP</th><th class=l>error record</th></tr>{failed}</table>{more}"
                if shown else "<p>No request failed.</p>")
    return (f"<details><summary>#{imp.record.index} {html.escape(imp.record.fault.label())}: per class, and the "
            f"failed requests</summary><p class=note>Windows: {spans}. Each cell: goodput (req/s) / attainment / "
            f"p90 TPOT (ms) (requests sent in the window).</p><table><tr><th class=l>config</th><th class=l>class</th>"
            f"<th>before</th><th>during</th><th>after</th></tr>{''.join(rows)}</table>{failures}</details>")


def _faults_figure(run: Run, records: Sequence[Any], found: Sequence[FaultImpact], start: float,
                   folder: Path) -> Figure:
    bin_s = max(1.0, run.scenario.controller.window_s / 4)
    times, goodput = timeline(records, [c.name for c in run.scenario.configurations], run.scenario.engine.clock_scale,
                              bin_s)
    groups: dict[float, list[FaultRecord]] = {}   # faults taken at the same moment share one mark
    for i in found:
        assert i.record.applied_at is not None
        groups.setdefault(round(i.record.applied_at - start), []).append(i.record)
    faults = []
    for at, group in sorted(groups.items()):
        ends = [r.ended_at for r in group]
        end = None if any(e is None for e in ends) else max(e for e in ends if e is not None) - start
        label = " + ".join(r.fault.label() for r in group) if len(group) < 3 else f"{len(group)} faults"
        faults.append((label, float(at), end))
    return ("Goodput over time, faults marked", figures.goodput_with_faults(
        times, goodput, faults, folder / "faults.png"),
        f"Bins of {bin_s:g} s by send time; each band runs from a fault's action to the end of its effect.")


def _overview(run: Run) -> str:
    """What ran, how it went in one line, and which clock the figures are on."""
    s = run.scenario
    stale = sum(1 for r in run.weights if r.get("stale")) // max(1, len(s.classes) * len(s.configurations))
    configs = ", ".join(f"{c.name} (TP{c.tp}×PP{c.pp}×{c.replicas})" for c in s.configurations)
    k = s.engine.clock_scale
    clock = (f"<p class=note>The simulated engine ran {k:g}× slower than the wall clock "
             "(engine.time_scale); latencies, rates and goodput below are on the engine's clock.</p>"
             if k != 1.0 else "")
    return f"""<h1>Parallax run: {html.escape(s.name)}</h1>
<p>{html.escape(s.description)}</p>
<p>{html.escape(s.model)} {s.dtype.value} on {s.hardware.nodes}×{s.hardware.gpus_per_node}
{html.escape(s.hardware.gpu)}; engine {s.engine.kind}; configurations {configs};
policy <b>{s.controller.policy}</b>; {len(run.records)} requests recorded; {len(run.decisions)} routing changes;
{stale} controller steps with stale data.</p>
<h2>SLA classes</h2>{_slo_text(run)}{clock}"""


def render_report(folder: Path) -> Path:
    """Write report.html and its PNG figures into the run folder; returns the HTML path."""
    run = read_run(folder)
    study = "".join(f"<p>{line}</p>" for line in study_comparison(run)) or "<p>No prediction.</p>"
    whatif_note = html.escape(run.whatif.get("note", "No simulator prediction was made for this run."))
    faults_note = (" This run had faults (see Faults below); the replay has none, so a configuration whose requests "
                   "suffered from one disagrees." if any(f.ok for f in run.faults) else "")
    name = html.escape(run.scenario.name)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Parallax run {name}</title>
<style>{CSS}</style></head><body>
{_overview(run)}
{_plan_vs_live(run)}
<h2>Outcome per class</h2>
<p class=note>Measured client-side over the whole run on the traffic each configuration actually received
(the chosen one gets most of it, the others the exploration share). {whatif_note}{faults_note}</p>
{_outcome_table(run)}
<h2>Live path</h2>
<p class=note>Client-side TTFT includes the live path (HTTP, Ray Serve's proxy, the ingress, the SSE relay): about
10 ms of wall time per request on a 2-core machine, ÷ engine.time_scale on the engine's clock. The server reports
its own TTFT in each response's usage; the difference is what the path added (bench/live_path.py measures it).</p>
{_path_table(run)}
<h2>Study vs simulation</h2>{study}
{_faults_section(run, folder)}
{repartition_section(folder, run.scenario, run.records)}
<h2>Routing decisions</h2>{_decisions_table(run)}
<h2>Figures</h2>{_figures_html(_figures(run, folder))}
<p class=note>Files: scenario.yaml, records.jsonl, scoreboard.csv, weights.csv, decisions.jsonl, whatif.json,
{FAULTS_JSONL + ", " if run.faults else ""}dashboards/.</p>
</body></html>"""
    out = folder / rf.REPORT_HTML
    out.write_text(page)
    return out


def compare_runs(folders: Sequence[Path], out: Path) -> Path:
    """One page with each run's outcome per class side by side."""
    runs = [read_run(f) for f in folders]
    cols = "".join(f"<th>{html.escape(r.folder.name)}</th>" for r in runs)
    keys: dict[tuple[str, str], None] = {}
    for r in runs:
        for row in class_outcome(r):
            keys[(row["sla_class"], row["config"])] = None
    cells: list[Mapping[tuple[str, str], dict[str, Any]]] = [
        {(row["sla_class"], row["config"]): row for row in class_outcome(r)} for r in runs]
    body = []
    for k in keys:
        tds = []
        for c in cells:
            found = c.get(k)
            if found is None or found["summary"].n == 0:
                tds.append("<td>–</td>")
                continue
            sm = found["summary"]
            tds.append(f"<td>w={_f(found['weight'])} att={sm.attainment:.0%} good={sm.goodput:.2f}/s "
                       f"p90 TTFT={_ms(sm.ttft_p90)} ms</td>")
        body.append(f"<tr><td class=l>{html.escape(k[0])}</td><td class=l>{html.escape(k[1])}</td>{''.join(tds)}</tr>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Parallax comparison</title><style>{CSS}</style>"
            f"</head><body><h1>Parallax runs side by side</h1><table><tr><th class=l>class</th><th class=l>config</th>"
            f"{cols}</tr>{''.join(body)}</table></body></html>")
    out.write_text(page)
    return out
