"""The live controller: every interval, scoreboard from Prometheus → policy → routing weights → ingress.

When Prometheus cannot be read or has no series, the scoreboard is stale: the last routing stays in
force and `parallax_controller_stale` is 1 until fresh data returns.

A configuration that cannot serve (the `health` callable names it: no running replica) is drained —
its share of every class goes to the others — and restored as soon as it is back; the policy's own
weights are kept throughout, so restoring needs no new measurement.

The serving set may change under it (deployments/fleet.py executes a transition): `follow_set` adopts a new
set of configurations and the routing in force, and the `serving_set` callable, when given, is read every
SET_POLL_S in a thread of its own and followed at the next step, so that a configuration that appears is
queried, health-checked and routed, and one that disappears is forgotten (its policy state, its gauges'
series, its capacities).
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controllers import runfolder
from controllers.policies import Decision, PolicyState, Weights, equal_weights, step
from controllers.scoreboard import Query, Sample, Scoreboard, collect
from loadgen.lengths import mean_lengths
from monitoring import metrics as m
from monitoring.promql import PromClient
from monitoring.rules import REQUEST_RATE
from schema.scenario import Scenario

log = logging.getLogger(__name__)
SET_POLL_S = 1.0   # how often the controller reads the serving set (beside its steps)


def prom_query(client: PromClient) -> Query:
    """The scoreboard's query callable over the monitoring package's client."""
    def query(expr: str) -> list[Sample]:
        return [(s.labels, s.value) for s in client.query(expr)]
    return query


class RoutingEndpoint(Protocol):
    """Where routing weights per class are applied: the ingress's /v1/routing (controllers/router_client.py)."""

    def set_weights(self, weights: Weights) -> None: ...


class ControllerMetrics:
    """The controller's own metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        p = m.CONTROLLER_PREFIX
        self.weight = Gauge(p + m.ROUTING_WEIGHT, "Routing weight per class and configuration",
                            ["sla_class", "config"], registry=self.registry)
        self.decisions = Counter(p + m.DECISIONS, "Routing changes made", ["sla_class", "config", "policy"],
                                 registry=self.registry)
        self.stale = Gauge(p + m.STALE, "1 while Prometheus data is missing or stale", registry=self.registry)
        self.headroom = Gauge(p + m.PREDICTED_HEADROOM, "Simulator-predicted SLO headroom",
                              ["sla_class", "config"], registry=self.registry)
        self.repartition_decisions = Counter(p + m.REPARTITION_DECISIONS, "Re-partitioning decisions by outcome",
                                             ["outcome"], registry=self.registry)
        self.repartition_moves = Counter(p + m.REPARTITION_MOVES, "Re-partitioning moves by result", ["result"],
                                         registry=self.registry)
        self.step_seconds = Histogram(p + m.TRANSITION_STEP_SECONDS, "Seconds a transition step took", ["step"],
                                      buckets=m.TRANSITION_STEP_BUCKETS, registry=self.registry)
        self.predicted_gain = Gauge(p + m.PREDICTED_GAIN, "The last re-plan's predicted relative gain of moving",
                                    registry=self.registry)
        self.realised_gain = Gauge(p + m.REALISED_GAIN, "The last move's realised relative gain over staying",
                                   registry=self.registry)
        self.shape_gpus = Gauge(p + m.SHAPE_GPUS, "GPUs serving in each shape now", ["shape"], registry=self.registry)

    def forget(self, classes: Iterable[str], configs: Iterable[str]) -> None:
        """Drop the per-class series of configurations no longer live."""
        for gauge in (self.weight, self.headroom):
            for cls in classes:
                for cfg in configs:
                    with contextlib.suppress(KeyError):   # never shown
                        gauge.remove(cls, cfg)

    def show(self, weights: Weights, stale: bool) -> None:
        for cls, ws in weights.items():
            for cfg, w in ws.items():
                self.weight.labels(cls, cfg).set(w)
        self.stale.set(1 if stale else 0)


class Controller:
    """Runs the policy over live scoreboards; `tick` is one step, `start`/`stop` run it in a thread."""

    def __init__(self, scenario: Scenario, query: Query, router: RoutingEndpoint, folder: Path | None = None,
                 metrics: ControllerMetrics | None = None, clock: Callable[[], float] = time.time,
                 engine_prefix: str = "ray_vllm_", health: Callable[[], set[str]] | None = None,
                 serving_set: Callable[[], tuple[list[str], Weights]] | None = None):
        self.scenario = scenario
        self.cfg = scenario.controller
        self.query = query
        self.router = router
        self.folder = folder
        self.metrics = metrics or ControllerMetrics()
        self.clock = clock
        self.engine_prefix = engine_prefix
        self.configs = [c.name for c in scenario.configurations]
        self.slos = {c.name: c.slo for c in scenario.classes}
        self.tokens_per_request = {c.name: sum(mean_lengths(c)) for c in scenario.classes}
        self.time_scale = scenario.engine.clock_scale
        self.capacities: dict[tuple[str, str], float] = {}   # (class, config) -> req/s, from the simulator
        classes = list(self.slos)
        self.state = PolicyState(scenario.plan.weights(classes) if scenario.plan is not None
                                 else equal_weights(classes, self.configs))
        self.board = Scoreboard(clock(), {}, stale=True)
        self.decisions: list[Decision] = []
        self.router_error: str | None = None
        self.health = health
        self.serving_set = serving_set
        self._latest_set: tuple[list[str], Weights] | None = None
        self._set_thread: threading.Thread | None = None
        self.down: set[str] = set()
        self.applied: Weights | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._paused_until = 0.0           # time.monotonic() before which the loop does not step
        self.last_step = 0.0               # time.monotonic() of the last step the loop took

    def apply_initial(self) -> None:
        """Route every class evenly (as planned, for a scenario with a plan) before any measurement."""
        self.router.set_weights(self.state.weights)
        self.applied = _copy(self.state.weights)
        self.metrics.show(self.state.weights, stale=True)

    def read(self, now: float) -> Scoreboard:
        try:
            board = collect(self.query, self.cfg.window_s, now, self.engine_prefix)
        except Exception as e:  # any failure to read Prometheus makes the data stale, never the loop die
            return Scoreboard(now, {}, stale=True, error=f"{type(e).__name__}: {e}")
        if not any(p.samples or p.request_rate for p in board.pairs.values()):
            return Scoreboard(now, board.pairs, stale=True,
                              error=f"no {REQUEST_RATE} series in the window: no traffic yet, or Prometheus lacks "
                                    "the recording rules (rules.yml of the run folder)")
        return board

    def read_health(self) -> set[str]:
        """Configurations that cannot serve now; on a failing check, the last answer."""
        if self.health is None:
            return set()
        try:
            return set(self.health()) & set(self.configs)
        except Exception as e:
            log.warning("health check failed: %s: %s", type(e).__name__, e)
            return self.down

    def follow_set(self, configs: Sequence[str], weights: Weights) -> None:
        """Adopt a new serving set and the routing in force on it (after a transition): the policy starts from
        that routing, and what it knew of configurations no longer live is dropped."""
        gone = set(self.configs) - set(configs)
        with self._lock:
            self.configs = list(configs)
            routed = {cls: {c: w for c, w in row.items() if c in configs} for cls, row in weights.items()}
            classes = {cls: st for cls, st in self.state.classes.items() if st.incumbent not in gone}
            self.state = PolicyState(routed, classes, self.state.last_switch)
            self.applied = _copy(routed)
            self.down &= set(configs)
            self.capacities = {k: v for k, v in self.capacities.items() if k[1] not in gone}
        self.metrics.forget(self.slos, gone)

    def refresh_set(self) -> None:
        """Read the serving set (a failing read keeps the last one); the next step follows it if it changed. The
        loop does this in a thread of its own every SET_POLL_S, so a step never waits for the store."""
        if self.serving_set is None:
            return
        try:
            self._latest_set = self.serving_set()
        except Exception as e:
            log.warning("serving set unreadable: %s: %s", type(e).__name__, e)

    def _follow_latest_set(self) -> None:
        latest = self._latest_set
        if latest is not None and set(latest[0]) != set(self.configs):
            self.follow_set(*latest)

    def tick(self) -> list[Decision]:
        """One controller step; returns the routing changes applied."""
        self._follow_latest_set()
        now = self.clock()
        board = self.read(now)
        down = self.read_health()
        new_state, decisions = step(self.cfg.policy, board, self.slos, self.configs, self.state, self.cfg, now,
                                    self.tokens_per_request)
        routed = drain(new_state.weights, down)
        if down != self.down:
            decisions = decisions + health_decisions(now, routed, self.applied or new_state.weights, down, self.down)
        if routed != (self.applied or self.state.weights):
            try:
                self.router.set_weights(routed)
                self.router_error = None
                self.applied = _copy(routed)
            except Exception as e:  # keep the old routing; try again next tick
                self.router_error = f"{type(e).__name__}: {e}"
                log.warning("routing update failed: %s", self.router_error)
                decisions, new_state, down, routed = [], self.state, self.down, self.applied or self.state.weights
        with self._lock:
            self.board = board
            self.state = new_state
            self.down = down
            self.decisions.extend(decisions)
        for d in decisions:
            self.metrics.decisions.labels(d.sla_class, d.chosen or "", d.policy).inc()
        self.metrics.show(routed, board.stale)
        if not board.stale:
            self._show_predicted_headroom(board)
        if self.folder is not None:
            runfolder.append_scoreboard(self.folder, board)
            runfolder.append_weights(self.folder, now, routed, board.stale)
            for d in decisions:
                runfolder.append_decision(self.folder, d)
        return decisions

    def _show_predicted_headroom(self, board: Scoreboard) -> None:
        """1 − (the class's measured arrival rate on the engine clock) / (its predicted capacity on each
        configuration): what is left if the whole class went there; ≤ −1 where it cannot go at all."""
        for cls in self.slos:
            rate = sum(board.pair(cfg, cls).request_rate for cfg in self.configs) * self.time_scale
            for cfg in self.configs:
                cap = self.capacities.get((cls, cfg))
                if cap is not None and rate > 0:
                    self.metrics.headroom.labels(cls, cfg).set(1 - rate / cap if cap > 0 else -1.0)

    def pause(self, seconds: float) -> None:
        """Take no step for `seconds` (a fault experiment: the controller stalls); the routing in force stays."""
        self._paused_until = time.monotonic() + seconds

    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.interval_s):
            if time.monotonic() < self._paused_until:
                continue
            try:
                self.tick()
            except Exception:  # a bug in one step must not stop the controller
                log.exception("controller step failed")
            self.last_step = time.monotonic()

    def _watch_set(self) -> None:
        while not self._stop.wait(SET_POLL_S):
            self.refresh_set()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="parallax-controller", daemon=True)
        self._thread.start()
        if self.serving_set is not None:
            self._set_thread = threading.Thread(target=self._watch_set, name="parallax-serving-set", daemon=True)
            self._set_thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._set_thread):
            if thread is not None:
                thread.join(timeout=30)
        self._thread = self._set_thread = None


def _copy(weights: Weights) -> Weights:
    return {cls: dict(ws) for cls, ws in weights.items()}


def drain(weights: Weights, down: set[str]) -> Weights:
    """`weights` with the configurations in `down` at 0, their share spread over the others in proportion
    (evenly when the others had none); a class whose configurations are all down keeps its weights."""
    if not down:
        return weights
    out: Weights = {}
    for cls, ws in weights.items():
        up = [c for c in ws if c not in down]
        if not up:
            out[cls] = dict(ws)
            continue
        total = sum(ws[c] for c in up)
        out[cls] = {c: 0.0 if c in down else (ws[c] / total if total > 0 else 1.0 / len(up)) for c in ws}
    return out


def health_decisions(now: float, routed: Weights, before: Weights, down: set[str],
                     was_down: set[str]) -> list[Decision]:
    """One decision per class recording a drain or a restore."""
    parts = []
    if down - was_down:
        parts.append(f"drained {', '.join(sorted(down - was_down))}: no running replica")
    if was_down - down:
        parts.append(f"restored {', '.join(sorted(was_down - down))}: running again")
    reason = "; ".join(parts)
    return [Decision(now, cls, "health", dict(ws), dict(before.get(cls, {})),
                     max(ws, key=lambda c: ws[c]) if ws else None, reason) for cls, ws in routed.items()]
