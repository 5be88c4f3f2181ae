"""The live re-partitioning policy (`controller.policy: repartition`): every `repartition.interval_s`, traffic →
forecast → corrections → re-plan → transition priced → decision (controllers/repartition.py) → on a move, the
transition executed through the fleet, rolled back on failure (controllers/transition/execute.py).

Every decision, step, transition outcome and realised gain is a line of the run folder's repartition.jsonl
(controllers/repartition_log.py) and a controller metric. Routing belongs to the transition's `Route` steps:
the routing policy of the controller stays out of it.

The traffic planned for is each class's forecast rate (engine clock, put back on the wall's) at the forecast
mix; every scenario class keeps at least `MIN_SHARE` of it, so a class that goes quiet keeps a pool and its
rare requests are still answered. Request lengths are the forecast means where they differ from the scenario
class's by more than `LENGTH_TOLERANCE` (each distribution rescaled to that mean, its spread kept:
loadgen/lengths.with_means), else the scenario's.
"""

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from controllers.controller import Controller, ControllerMetrics
from controllers.correction import Corrections, correct
from controllers.forecast import forecast_traffic
from controllers.plan.candidates import Pool, Shape
from controllers.plan.observed import predict_at_load
from controllers.plan.parallel import InProcess, Runner
from controllers.plan.replan import replan
from controllers.repartition import (
    Dwell,
    Predicted,
    Replanner,
    decide,
    factor_pairs,
    measured_goodput,
    observations,
    pools_of,
    realised_gain,
    value_move,
)
from controllers.repartition_log import (
    DecisionLine,
    Line,
    RealisedLine,
    StepLine,
    TransitionLine,
    append_line,
)
from controllers.scoreboard import ClassTraffic, Query, Scoreboard, read_traffic
from controllers.transition.cost import StartSeconds
from controllers.transition.execute import Fleet, StepDone, execute_transition
from controllers.transition.planner import ServingSet, Transition, TransitionError, plan_transition
from controllers.transition.steps import Deploy, SetView
from deployments.placement import Node
from deployments.resolve import Resolved
from loadgen.lengths import with_means
from schema.deployment import ParallelConfig
from schema.scenario import Scenario
from schema.traffic import TrafficClass

log = logging.getLogger(__name__)

REPLANNER: Replanner = replan
MIN_SHARE = 0.01        # the least share of the planned mix a scenario class keeps
HISTORY = 20            # traffic readings the forecast sees
CORRECTION_QUANTILE = 0.9
# A window of ~100-200 requests measures a class's mean length to within ~5% (lognormal sigma 0.5-0.6: the
# standard error is sigma-ish ÷ √n); the scenario's distribution is kept within twice that, so sampling noise
# never changes what is planned for.
LENGTH_TOLERANCE = 0.10

Predictor = Callable[[Scoreboard, Sequence[ParallelConfig]], Predicted]  # the simulator at the load seen


def planned_mix(forecast: Mapping[str, ClassTraffic], classes: Sequence[str]) -> tuple[dict[str, float], float]:
    """(shares, total rate) of the forecast, every class at least MIN_SHARE (renormalised); rate on the forecast's
    clock. Shares are even when nothing is forecast."""
    rates = {c: forecast[c].rate if c in forecast else 0.0 for c in classes}
    total = sum(rates.values())
    raw = {c: (r / total if total > 0 else 1.0 / len(classes)) for c, r in rates.items()}
    floored = {c: max(MIN_SHARE, s) for c, s in raw.items()}
    norm = sum(floored.values())
    return {c: s / norm for c, s in floored.items()}, total


def planned_lengths(scenario: Scenario, forecast: Mapping[str, ClassTraffic], base_dir: Path | None) -> Scenario:
    """`scenario` with each class's lengths at the forecast means (module docstring)."""
    def lengths(c: TrafficClass) -> TrafficClass:
        f = forecast.get(c.name)
        if f is None:
            return c
        return with_means(c, f.prompt_tokens.mean, f.output_tokens.mean, LENGTH_TOLERANCE, base_dir)
    return scenario.model_copy(update={"classes": [lengths(c) for c in scenario.classes]})


def gpus_by_shape(view: SetView) -> dict[str, int]:
    """GPUs of the live configurations per shape label (`TP4`, `PP4`)."""
    out: dict[str, int] = {}
    for c in view.configs.values():
        label = Shape(c.tp, c.pp).label
        out[label] = out.get(label, 0) + c.gpus_per_replica * c.replicas
    return out


@dataclass
class _Pending:
    """A move whose realised gain is to be measured over the second scoreboard window after it (the first holds
    the requests a hold released)."""

    decision: int
    stay_goodput: float
    after: float


class Repartitioner:
    """The policy's state and one step (`tick`); `start`/`stop` run it in a thread of its own (a transition takes
    minutes: the controller's routing loop goes on meanwhile)."""

    def __init__(self, resolved: Resolved, view: SetView, query: Query, board: Callable[[], Scoreboard],
                 replanner: Replanner, runner: Runner, fleet: Fleet, start_s: StartSeconds, nodes: Sequence[Node],
                 drain_s: float, folder: Path | None = None, metrics: ControllerMetrics | None = None,
                 clock: Callable[[], float] = time.time, predict: Predictor | None = None):
        self.resolved = resolved
        self.cfg = resolved.scenario.controller.repartition
        self.window_s = resolved.scenario.controller.window_s
        self.view = view
        self.query = query
        self.board = board
        self.replanner = replanner
        self.runner = runner
        self.fleet = fleet
        self.start_s = start_s
        self.nodes = list(nodes)
        self.drain_s = drain_s
        self.folder = folder
        self.metrics = metrics or ControllerMetrics()
        self.clock = clock
        self.predict = predict
        self.classes = [c.name for c in resolved.scenario.classes]
        self.time_scale = resolved.scenario.engine.clock_scale
        self.dwell = Dwell()
        self.corrections: Corrections = {}
        self.history: list[tuple[float, dict[str, ClassTraffic]]] = []
        self.used_names = set(view.configs)
        self.lines: list[Line] = []
        self.decisions = 0
        self.pending: _Pending | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._show_gpus()

    @property
    def budget_gpus(self) -> int:
        return self.cfg.gpus or self.resolved.scenario.hardware.total_gpus

    def _say(self, line: Line) -> None:
        self.lines.append(line)
        if self.folder is not None:
            append_line(self.folder, line)

    def _show_gpus(self) -> None:
        self.metrics.shape_gpus.clear()
        for label, n in gpus_by_shape(self.view).items():
            self.metrics.shape_gpus.labels(label).set(n)

    def _plan(self, pools: Sequence[Pool], view: SetView) -> Transition:
        return plan_transition(ServingSet(tuple(view.configs.values()), view.weights), pools, self.nodes,
                               self.start_s, drain_s=self.drain_s, used_names=self.used_names)

    def _realise(self, now: float, board: Scoreboard) -> None:
        p = self.pending
        if p is None or now < p.after or board.stale:
            return
        measured = measured_goodput(board)
        gain = realised_gain(measured, p.stay_goodput)
        self._say(RealisedLine(time=now, decision=p.decision, measured_goodput=measured, stay_goodput=p.stay_goodput,
                               realised_gain=gain))
        if gain is not None:
            self.metrics.realised_gain.set(gain)
        self.pending = None

    def tick(self) -> DecisionLine:
        """One re-plan and its decision (and, on a move, the transition)."""
        now = self.clock()
        self.decisions += 1
        n = self.decisions
        board = self.board()
        self._realise(now, board)
        current = pools_of(tuple(self.view.configs.values()), self.view.weights, self.classes)
        base = DecisionLine(time=now, decision=n, outcome="stay", reason="", current=[_label(p) for p in current],
                            gpus=gpus_by_shape(self.view))
        try:
            self.history = [*self.history, (now, read_traffic(self.query, self.time_scale))][-HISTORY:]
        except Exception as e:  # Prometheus unreadable: no decision this time
            return self._decided(base.model_copy(update={
                "outcome": "error", "reason": f"stay: traffic unreadable ({type(e).__name__}: {e})"}))
        if self.predict is not None and not board.stale:
            configs = tuple(self.view.configs.values())
            obs = observations(board, configs, self.predict(board, configs), CORRECTION_QUANTILE)
            self.corrections = correct(self.corrections, obs, self.cfg.correction)
        ahead = forecast_traffic(self.history, self.cfg.forecast)
        shares, engine_rate = planned_mix(ahead, self.classes)
        rate = engine_rate / self.time_scale
        base = base.model_copy(update={"shares": shares, "rate": rate})
        if rate <= 0:
            return self._decided(base.model_copy(update={"reason": "stay: no traffic forecast"}))
        planned = planned_lengths(self.resolved.scenario.with_mix(shares, rate), ahead,
                                  Path(self.resolved.source).parent)
        mix = Resolved(planned, self.resolved.model, self.resolved.gpu, self.resolved.source)
        try:
            replan = self.replanner(mix, current, factor_pairs(self.corrections), self.cfg.plan_budget_s, self.runner)
        except Exception as e:  # a planner failure (nothing fits, a bug) must not stop serving
            return self._decided(base.model_copy(update={
                "outcome": "error", "reason": f"stay: re-plan failed ({type(e).__name__}: {e})"}))
        base = base.model_copy(update={"best": [_label(p) for p in replan.best], "plan_s": replan.elapsed_s,
                                       "stay_goodput": replan.current_goodput, "best_goodput": replan.best_goodput})
        transition: Transition | None = None
        if sorted(replan.best) != sorted(current):
            try:
                transition = self._plan(replan.best, self.view)
            except TransitionError as e:   # e.g. a target the nodes cannot hold
                return self._decided(base.model_copy(update={
                    "reason": f"stay: the best split cannot be reached ({e})"}))
        valuation = value_move(replan, current, transition.cost if transition else None, self.budget_gpus,
                               self.cfg.forecast.horizon_s)
        verdict, self.dwell = decide(self.dwell, now, valuation, self.cfg)
        gain = valuation.gain
        line = self._decided(base.model_copy(update={
            "outcome": "move" if verdict.move else "stay", "reason": verdict.reason, "cost": valuation.cost,
            "predicted_gain": None if math.isinf(gain) else gain}))
        if verdict.move and transition is not None:
            self._move(n, transition, replan.current_goodput)
        return line

    def _decided(self, line: DecisionLine) -> DecisionLine:
        self._say(line)
        self.metrics.repartition_decisions.labels(line.outcome).inc()
        if line.predicted_gain is not None:
            self.metrics.predicted_gain.set(line.predicted_gain)
        log.info("repartition %d: %s", line.decision, line.reason)
        return line

    def _move(self, n: int, transition: Transition, stay_goodput: float) -> None:
        start = self.view
        back_to = pools_of(tuple(start.configs.values()), start.weights, self.classes)
        t0 = self.clock()

        def on_step(d: StepDone) -> None:
            if isinstance(d.step, Deploy):      # a name once deployed (even if it failed) is never reused
                self.used_names.add(d.step.config.name)
            self._say(StepLine(time=self.clock(), decision=n, line=d.step.line, seconds=d.seconds, error=d.error,
                               rollback=d.rollback))
            self.metrics.step_seconds.labels(type(d.step).__name__.lower()).observe(d.seconds)

        out = execute_transition(transition, start, self.fleet, lambda v: self._plan(back_to, v), on_step)
        self.view = out.view
        self._show_gpus()
        end = self.clock()
        self._say(TransitionLine(time=end, decision=n, reached=out.reached, reason=out.reason, seconds=end - t0,
                                 gpus=gpus_by_shape(self.view)))
        self.metrics.repartition_moves.labels("reached" if out.reached else "rolled_back").inc()
        if out.reached:
            # Measured over a window that starts one window after the move: the requests a hold released finish
            # in the first window (late by the hold), which says what the move cost, not what the split serves.
            self.pending = _Pending(n, stay_goodput, end + 2 * self.window_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.cfg.interval_s):
            try:
                self.tick()
            except Exception:  # a bug in one re-plan must not stop the controller
                log.exception("repartition step failed")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="parallax-repartition", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None


def _label(p: Pool) -> str:
    return f"{p.label} [{', '.join(p.classes)}]"


def hardware_nodes(resolved: Resolved) -> list[Node]:
    """The scenario's nodes as the transition planner sees them (ids `node-0`, …), the budget's GPUs only."""
    hw = resolved.scenario.hardware
    budget = resolved.scenario.controller.repartition.gpus or hw.total_gpus
    out = []
    for i in range(hw.nodes):
        gpus = min(hw.gpus_per_node, budget - i * hw.gpus_per_node)
        if gpus > 0:
            out.append(Node(f"node-{i}", float(gpus)))
    return out


def for_run(resolved: Resolved, controller: Controller, fleet: Fleet, start_s: StartSeconds, drain_s: float,
            folder: Path | None, replanner: Replanner = REPLANNER, nodes: Sequence[Node] | None = None
            ) -> Repartitioner:
    """The policy beside a running controller: the scenario's configurations as the first split, routed as the
    controller routes them now; the controller's Prometheus queries, scoreboard and metrics; the simulator's
    latencies at the load seen for the correction factors; re-plans in this process (the machine's cores serve
    the run)."""
    s = resolved.scenario
    view = SetView({c.name: c for c in s.configurations},
                   {cls: dict(row) for cls, row in (controller.applied or controller.state.weights).items()})
    return Repartitioner(resolved, view, controller.query, lambda: controller.board, replanner, InProcess(), fleet,
                         start_s, nodes if nodes is not None else hardware_nodes(resolved), drain_s, folder,
                         controller.metrics, predict=partial(predict_at_load, resolved))
