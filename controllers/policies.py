"""Routing policies: pure functions from a scoreboard to routing weights per SLA class.

Goodput is compared per routed request (the share of a class's requests that met every SLO, i.e. the
attainment), because a configuration's absolute goodput grows with the share of traffic it is given.
Among configurations that meet the class's attainment target, the one with the largest latency
headroom at the target's percentile wins: it keeps meeting the SLO furthest as load grows. Once
chosen, a configuration keeps the class while it meets the SLO with headroom to spare (at least the
hysteresis margin): challengers are measured on the exploration share only, which flatters them.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from controllers.scoreboard import PairStats, Scoreboard
from schema.controller import ControllerConfig
from schema.traffic import SLO

Weights = dict[str, dict[str, float]]   # class -> config -> share (sums to 1)

MAX_ERROR_RATE = 0.5     # a configuration failing this share of a class's requests is drained
MIN_ERRORS_TO_DRAIN = 3  # ... once it has finished at least this many of them in the window
QUARANTINE_WINDOWS = 3   # a drained configuration gets none of the class for this many windows, then is probed
WARMUP_WINDOWS = 2       # a first choice waits this long for every configuration to reach min_samples


@dataclass(frozen=True)
class ClassState:
    """Where a class is routed and since when (for the minimum dwell)."""

    incumbent: str | None = None
    since: float = float("-inf")
    quarantine: dict[str, float] = field(default_factory=dict)   # drained configuration -> until when
    judging_since: float | None = None   # before a first choice: when a configuration was first judged
    # configuration -> the class's request rate when it lost the class by missing the SLO: measured on the
    # exploration share it looks better than it is, so it may not win the class back on headroom until
    # the class's rate falls below this by the hysteresis margin
    missed_at: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evidence:
    samples: int
    attainment: float | None
    goodput: float
    headroom: float | None
    error_rate: float
    failing: bool

    @staticmethod
    def of(p: PairStats, slo: SLO) -> "Evidence":
        return Evidence(p.samples, p.attainment, p.goodput, headroom(p, slo), p.error_rate, failing(p))


@dataclass(frozen=True)
class Proposal:
    """What best-per-class would do with one class: its weights, its new state, why, and the evidence."""

    weights: dict[str, float]
    state: ClassState
    reason: str
    evidence: dict[str, Evidence]


@dataclass(frozen=True)
class Decision:
    """One change of a class's routing and why."""

    time: float
    sla_class: str
    policy: str
    weights: dict[str, float]
    previous: dict[str, float]
    chosen: str | None
    reason: str
    evidence: dict[str, Evidence] = field(default_factory=dict)


def equal_weights(classes: Sequence[str], configs: Sequence[str]) -> Weights:
    return {c: {k: 1.0 / len(configs) for k in configs} for c in classes}


def failing(p: PairStats) -> bool:
    """A configuration that fails most of a class's requests."""
    errors = p.error_rate * p.samples
    return errors >= MIN_ERRORS_TO_DRAIN and p.error_rate >= MAX_ERROR_RATE


def headroom(p: PairStats, slo: SLO) -> float | None:
    """Smallest relative margin below the SLO targets at the attainment percentile (1 = zero latency)."""
    margins = []
    for target_ms, q in ((slo.ttft_ms, p.ttft), (slo.tpot_ms, p.tpot), (slo.e2e_ms, p.e2e)):
        if target_ms is None:
            continue
        value = q.at(slo.attainment)
        if value is None:
            return None
        margins.append(1.0 - value / (target_ms / 1000.0))
    return min(margins) if margins else None


def _meets(e: Evidence, slo: SLO) -> bool:
    return slo.attained(e.attainment)


def _split(chosen: str, others: Sequence[str], explore: float) -> dict[str, float]:
    out = {chosen: 1.0 if not others else 1.0 - explore}
    out.update({o: explore / len(others) for o in others})
    return out


def _normalise(w: Mapping[str, float], drop: set[str]) -> dict[str, float]:
    kept = {k: v for k, v in w.items() if k not in drop}
    total = sum(kept.values())
    if total <= 0:
        return {k: 1.0 / len(kept) for k in kept} if kept else {}
    return {k: v / total for k, v in kept.items()}


def _better(ch: Evidence, inc: Evidence, slo: SLO, hysteresis: float) -> bool:
    """Whether a challenger beats the incumbent by more than the hysteresis margin."""
    ch_meets, inc_meets = _meets(ch, slo), _meets(inc, slo)
    if ch_meets != inc_meets:
        return ch_meets
    if ch_meets:
        # An incumbent with headroom to spare stays: a challenger's headroom is measured on the
        # exploration share only and would look better than it is under the class's full load.
        at_risk = (inc.headroom or 0.0) < hysteresis
        return at_risk and (ch.headroom or 0.0) > (inc.headroom or 0.0) + hysteresis
    return (ch.attainment or 0.0) > (inc.attainment or 0.0) * (1 + hysteresis) + 1e-9


def _rank_key(e: Evidence, slo: SLO) -> tuple[bool, float, float]:
    meets = _meets(e, slo)
    return (meets, e.headroom or -1e9 if meets else 0.0, e.attainment or 0.0)


def best_per_class(board: Scoreboard, slo: SLO, sla_class: str, configs: Sequence[str],
                   current: Mapping[str, float], state: ClassState, cfg: ControllerConfig,
                   now: float) -> Proposal:
    """New weights of one class, its new state, the reason, and the evidence per configuration."""
    ev = {c: Evidence.of(board.pair(c, sla_class), slo) for c in configs}
    quarantine = {c: t for c, t in state.quarantine.items() if t > now}
    newly = [c for c, e in ev.items() if e.failing and c not in quarantine]
    quarantine.update({c: now + QUARANTINE_WINDOWS * cfg.window_s for c in newly})
    note = "".join(f"{c} is failing ({ev[c].error_rate:.0%} errors): drained; " for c in newly)
    state = replace(state, quarantine=quarantine)
    drained = set(quarantine)
    live = [c for c in configs if c not in drained]
    if not live:
        return Proposal(dict(current), state, note + "every configuration is failing; routing kept", ev)
    judged = [c for c in live if ev[c].samples >= cfg.min_samples and ev[c].attainment is not None]
    inc = state.incumbent
    if inc is not None and inc in drained:
        inc = None
    if not judged:
        if inc is not None:
            w = _split(inc, [c for c in live if c != inc], cfg.explore_share)
            return Proposal(w, state, note + "keeping: too few samples", ev)
        w = _normalise(current, drained)
        return Proposal(w, state, note + f"warming up: fewer than {cfg.min_samples} samples per configuration", ev)
    unjudged = [c for c in live if c not in judged]
    if state.incumbent is None and unjudged:
        # A first choice compares every configuration: once one is chosen the others get only the
        # exploration share, which may never bring them to min_samples. A configuration that stays
        # short of samples for WARMUP_WINDOWS (too slow to finish requests) is left out.
        since = now if state.judging_since is None else state.judging_since
        if now - since < WARMUP_WINDOWS * cfg.window_s:
            return Proposal(_normalise(current, drained), replace(state, judging_since=since),
                            note + f"warming up: fewer than {cfg.min_samples} samples on {', '.join(unjudged)}", ev)
    rate = _class_rate(board, sla_class, configs)
    missed = {c: r for c, r in state.missed_at.items() if rate >= r * (1 - cfg.hysteresis)}
    state = replace(state, missed_at=missed)
    eligible = [c for c in judged if c not in missed or c == inc] or judged
    best = max(eligible, key=lambda c: _rank_key(ev[c], slo))
    dwell_ok = now - state.since >= cfg.min_dwell_s
    if inc is None:
        chosen, new_state = best, _moved(state, best, now)
        if state.incumbent in drained:
            reason = f"routed to {best} instead"
        else:
            reason = f"first choice: {best} (attainment {ev[best].attainment or 0:.0%})"
    elif best != inc and dwell_ok and inc in judged and _better(ev[best], ev[inc], slo, cfg.hysteresis):
        chosen, reason = best, _why(best, inc, ev, slo)
        new_state = _moved(state, best, now, missed=None if _meets(ev[inc], slo) else (inc, rate))
    else:
        barred = [c for c in judged if c in missed and c != inc]
        why_not = "".join(f"; {c} missed the SLO at {missed[c]:.2f} req/s of the class (now {rate:.2f})"
                          for c in barred)
        chosen, reason, new_state = inc, f"keeping {inc}{why_not}", state
    return Proposal(_split(chosen, [c for c in live if c != chosen], cfg.explore_share), new_state, note + reason, ev)


def _class_rate(board: Scoreboard, sla_class: str, configs: Sequence[str]) -> float:
    """Requests/s of a class that ended in the window, over every configuration."""
    return sum(board.pair(c, sla_class).request_rate for c in configs)


def _moved(state: ClassState, to: str, now: float, missed: tuple[str, float] | None = None) -> ClassState:
    """The class routed to `to` from now; `missed`: the configuration it leaves for missing the SLO, at
    which class rate."""
    missed_at = dict(state.missed_at)
    if missed is not None:
        missed_at[missed[0]] = missed[1]
    missed_at.pop(to, None)
    return replace(state, incumbent=to, since=now, judging_since=None, missed_at=missed_at)


def _why(best: str, inc: str, ev: Mapping[str, Evidence], slo: SLO) -> str:
    b, i = ev[best], ev[inc]
    if _meets(b, slo) and not _meets(i, slo):
        return (f"{inc} misses the SLO (attainment {i.attainment or 0:.0%} < {slo.attainment:.0%}); "
                f"{best} meets it ({b.attainment or 0:.0%})")
    if _meets(b, slo):
        return (f"both meet the SLO; {best} has more latency headroom "
                f"({b.headroom or 0:.0%} vs {i.headroom or 0:.0%})")
    return f"neither meets the SLO; {best} has higher attainment ({b.attainment or 0:.0%} vs {i.attainment or 0:.0%})"


def proportional(board: Scoreboard, slo: SLO, sla_class: str, configs: Sequence[str],
                 current: Mapping[str, float], cfg: ControllerConfig) -> tuple[dict[str, float], str,
                                                                               dict[str, Evidence]]:
    """Split a class across configurations in proportion to goodput per routed request (attainment)."""
    ev = {c: Evidence.of(board.pair(c, sla_class), slo) for c in configs}
    live = [c for c in configs if not ev[c].failing]
    if not live:
        return dict(current), "every configuration is failing; routing kept", ev
    judged = [c for c in live if ev[c].samples >= cfg.min_samples and ev[c].attainment is not None]
    if len(judged) < len(live):
        missing = [c for c in live if c not in judged]
        drained = {c for c in configs if c not in live}
        return _normalise(current, drained), f"warming up: too few samples on {', '.join(missing)}", ev
    floor = cfg.explore_share / len(live)
    raw = {c: max(ev[c].attainment or 0.0, 0.0) for c in live}
    total = sum(raw.values())
    if total <= 0:
        return {c: 1.0 / len(live) for c in live}, "no goodput anywhere; split evenly", ev
    w = {c: floor + (1 - cfg.explore_share) * raw[c] / total for c in live}
    return w, "split by attainment: " + ", ".join(f"{c} {raw[c]:.0%}" for c in live), ev


@dataclass
class PolicyState:
    """What the controller carries between steps."""

    weights: Weights
    classes: dict[str, ClassState] = field(default_factory=dict)
    last_switch: float = float("-inf")   # last time any class moved away from a working incumbent


def step(policy: str, board: Scoreboard, slos: Mapping[str, SLO], configs: Sequence[str],
         state: PolicyState, cfg: ControllerConfig, now: float,
         tokens_per_request: Mapping[str, float] | None = None) -> tuple[PolicyState, list[Decision]]:
    """One controller step over every class; returns the new state and the changes made.

    best-per-class moves at most one class per step away from a working incumbent, and only once
    `min_dwell_s` has passed since the last such move, so that each move is measured before the next
    (classes share configurations: moving one changes what the others see). When several want to move,
    the heaviest on its incumbent goes first (requests/s × tokens per request): moving it relieves most.
    Draining a failing configuration and first choices are never held back.
    """
    if policy in ("observe", "repartition") or board.stale:   # repartition: the transitions' Route steps route
        return state, []
    weights: Weights = {}
    classes = dict(state.classes)
    decisions = []
    proposals: dict[str, Proposal] = {}
    if policy == "best-per-class":
        for cls, slo in slos.items():
            cs = classes.get(cls, ClassState())
            proposals[cls] = best_per_class(board, slo, cls, configs, state.weights.get(cls, {}), cs, cfg, now)
        proposals = _one_move(board, slos, configs, classes, proposals, cfg, now, state.last_switch,
                              tokens_per_request or {})
    last_switch = state.last_switch
    for cls, slo in slos.items():
        cur = state.weights.get(cls, {})
        cs = classes.get(cls, ClassState())
        if policy == "best-per-class":
            p = proposals[cls]
            w, cs_new, reason, ev = p.weights, p.state, p.reason, p.evidence
            chosen = cs_new.incumbent
            if _is_move(cs, cs_new, ev):
                last_switch = now
        elif policy == "proportional":
            w, reason, ev = proportional(board, slo, cls, configs, cur, cfg)
            must_drain = any(ev[c].failing and cur.get(c, 0.0) > 0 for c in configs)
            dwell_ok = now - cs.since >= cfg.min_dwell_s
            if must_drain or (dwell_ok and _changed(cur, w, cfg.hysteresis / 2)):
                cs_new = replace(cs, since=now)
            else:
                w, cs_new = dict(cur), cs
            chosen = max(w, key=lambda c: w[c]) if w else None
        else:
            raise ValueError(f"unknown policy {policy!r}")
        full = {c: round(w.get(c, 0.0), 6) for c in configs}
        weights[cls] = full
        classes[cls] = cs_new
        if _changed(cur, full):
            decisions.append(Decision(now, cls, policy, full, dict(cur), chosen, reason, ev))
    return PolicyState(weights, classes, last_switch), decisions


def _load(board: Scoreboard, config: str, cls: str, tokens_per_request: Mapping[str, float]) -> float:
    """Tokens/s a class brings to a configuration (requests/s × tokens per request)."""
    return board.pair(config, cls).request_rate * tokens_per_request.get(cls, 1.0)


def _one_move(board: Scoreboard, slos: Mapping[str, SLO], configs: Sequence[str], classes: Mapping[str, ClassState],
              proposals: dict[str, Proposal], cfg: ControllerConfig, now: float, last_switch: float,
              tokens_per_request: Mapping[str, float]) -> dict[str, Proposal]:
    """Keep at most one switch away from a working incumbent, and none while the last one settles.

    A configuration that misses a class's SLO (or leaves it less headroom than the hysteresis margin) is
    overloaded by everything routed to it: the class that brings it the most tokens/s moves (to its best
    alternative that meets its own SLO), whether or not it is the one that suffers, because moving it
    relieves the configuration most.
    """
    out = dict(proposals)
    wanting = [c for c, p in proposals.items() if _is_move(classes.get(c, ClassState()), p.state, p.evidence)]
    for c in wanting:   # hold every switch back; the chosen one is put back below
        cs = classes[c]
        inc = cs.incumbent or ""
        ev = proposals[c].evidence
        live = [k for k in configs if k != inc and not ev[k].failing]
        out[c] = Proposal(_split(inc, live, cfg.explore_share), cs, f"keeping {inc}: one move at a time", ev)
    if not wanting or now - last_switch < cfg.min_dwell_s:
        return out
    victim = max(wanting, key=lambda c: _load(board, classes[c].incumbent or "", c, tokens_per_request))
    overloaded = classes[victim].incumbent or ""
    at_risk = proposals[victim].evidence[overloaded]
    if not _meets(at_risk, slos[victim]) or (at_risk.headroom is not None and at_risk.headroom < cfg.hysteresis):
        sharers = [c for c in slos if classes.get(c, ClassState()).incumbent == overloaded]
        heaviest = max(sharers, key=lambda c: _load(board, overloaded, c, tokens_per_request))
        if heaviest != victim:
            ev = proposals[heaviest].evidence
            alts = [k for k in configs if k != overloaded and not ev[k].failing
                    and k not in proposals[heaviest].state.missed_at
                    and ev[k].samples >= cfg.min_samples and _meets(ev[k], slos[heaviest])]
            if alts:
                to = max(alts, key=lambda k: _rank_key(ev[k], slos[heaviest]))
                live = [k for k in configs if k != to and not ev[k].failing]
                reason = (f"{overloaded} puts {victim}'s SLO at risk (attainment {at_risk.attainment or 0:.0%}, "
                          f"headroom {at_risk.headroom or 0:.0%}); {heaviest} brings it the most load, so "
                          f"{heaviest} moves to {to}, which meets its SLO ({ev[to].attainment or 0:.0%})")
                old = proposals[heaviest].state
                misses = not _meets(ev[overloaded], slos[heaviest])
                new = _moved(old, to, now, (overloaded, _class_rate(board, heaviest, configs)) if misses else None)
                out[heaviest] = Proposal(_split(to, live, cfg.explore_share), new, reason, ev)
                return out
            if _meets(at_risk, slos[victim]):
                return out   # still within its SLO: wait for evidence on the heavier class's alternatives
    out[victim] = proposals[victim]
    return out


def _is_move(old: ClassState, new: ClassState, ev: Mapping[str, Evidence]) -> bool:
    """A switch away from a working incumbent (not a first choice, not a drain)."""
    return (old.incumbent is not None and new.incumbent != old.incumbent
            and not ev[old.incumbent].failing)


def _changed(a: Mapping[str, float], b: Mapping[str, float], tol: float = 1e-6) -> bool:
    return any(abs(a.get(k, 0.0) - b.get(k, 0.0)) > tol for k in set(a) | set(b))
