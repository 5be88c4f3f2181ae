"""`FaultSchedule`: the scenario's faults applied on schedule beside the load, each followed until its effect
is over, each recorded in faults.jsonl and exported as metrics (the dashboards draw them as annotations).

One thread per fault: it waits for the load's start (LoadControl) and then for its `at_s`, takes the action,
and watches what follows (for a killed replica: Serve noticing, a replacement running). Faults due at the same
moment are taken at the same moment. `stop`, once the load is over, takes no more action, restores slowed GPUs,
gives what follows a bounded time to be seen (a replacement that comes after the load is still recorded),
writes every record and removes the fault board.
"""

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from prometheus_client import CollectorRegistry, Counter, Gauge

from controllers.controller import Controller
from controllers.faults.record import PHASES, FaultRecord, append_fault
from deployments.fault_board import fault_board
from deployments.replicas import ReplicaRef, kill_replica, running_replicas
from loadgen.control import LoadControl
from monitoring import metrics as m
from schema.faults import ENGINE_ACTIONS, Fault
from schema.scenario import Scenario

log = logging.getLogger(__name__)

POLL_S = 0.5            # how often a watcher looks at Serve's replicas or the controller
ORDER_TIMEOUT_S = 15.0  # the longest a replica may take to carry out an engine order
FOLLOW_S = 90.0         # after the load, the longest `stop` waits for what follows the faults to be seen
JOIN_S = 10.0           # then, how long it waits for each fault's thread to end


class FaultMetrics:
    """`parallax_fault_applied_total` and `parallax_fault_active`, in the registry given (the controller's)."""

    def __init__(self, registry: CollectorRegistry):
        self.applied = Counter(m.FAULT_PREFIX + m.FAULT_APPLIED, "Scheduled faults applied", m.FAULT_LABELS,
                               registry=registry)
        self.active = Gauge(m.FAULT_PREFIX + m.FAULT_ACTIVE, "1 from a fault's action until its effect is over",
                            m.FAULT_LABELS, registry=registry)

    def labels(self, index: int, fault: Fault) -> tuple[str, str, str]:
        return str(index), fault.action, fault.target or ""


class FaultSchedule:
    """Applies `scenario.faults` during one run; `start` before the load, `stop` after it."""

    def __init__(self, scenario: Scenario, folder: Path, registry: CollectorRegistry, load: LoadControl,
                 controller: Controller | None = None,
                 restart_prometheus: Callable[[], tuple[float, float]] | None = None,
                 say: Callable[[str], None] = lambda _: None):
        self.faults = list(scenario.faults)
        self.folder = folder
        self.metrics = FaultMetrics(registry)
        self.load = load
        self.controller = controller
        self.restart_prometheus = restart_prometheus
        self.say = say
        self._ended = threading.Event()   # the load is over: no more actions
        self._stop = threading.Event()    # no more watching
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._board: Any = None
        for i, fault in enumerate(self.faults):   # every series from the start, so an applied fault is a change
            self.metrics.applied.labels(*self.metrics.labels(i, fault))
            self.metrics.active.labels(*self.metrics.labels(i, fault)).set(0)

    def start(self) -> None:
        if any(f.action in ENGINE_ACTIONS for f in self.faults):
            self._board = fault_board()
        for i, fault in enumerate(self.faults):
            t = threading.Thread(target=self._one, args=(i, fault), name=f"parallax-fault-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, follow_s: float = FOLLOW_S) -> None:
        """The load is over: take no more action, give what follows the faults up to `follow_s` to be seen (0:
        an interrupted run), then end the watching; every fault's record is written by then."""
        self._ended.set()
        deadline = time.monotonic() + follow_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for t in self._threads:
            t.join(JOIN_S)
        if self._board is not None:
            ray.kill(self._board)
            self._board = None

    # --- one fault ---------------------------------------------------------------------------------------
    def _one(self, index: int, fault: Fault) -> None:
        epoch = None
        while epoch is None and not self._ended.is_set():
            epoch = self.load.wait_start(POLL_S)
        if epoch is None:
            return   # the load never started: nothing was due
        rec = FaultRecord(index=index, fault=fault, due_at=epoch + fault.at_s)
        labels = self.metrics.labels(index, fault)
        try:
            if self._ended.wait(max(0.0, rec.due_at - time.time())):
                rec.detail = "the run ended before it was due"
                return
            try:
                self._apply(rec)
            except Exception as e:  # a fault that cannot be taken is recorded, never the run's end
                rec.ok, rec.detail = False, f"{type(e).__name__}: {e}"
            self.say(f"fault {index} at {fault.at_s:g} s, {fault.label()}: "
                     + (rec.detail if rec.ok else f"not applied: {rec.detail}"))
            if rec.ok:
                self.metrics.applied.labels(*labels).inc()
                self.metrics.active.labels(*labels).set(1)
                self._follow(rec)
        except Exception as e:  # what follows could not be watched to its end: the phases seen stay
            log.warning("fault %d (%s): watching what follows failed: %s: %s", index, fault.label(),
                        type(e).__name__, e)
        finally:
            self.metrics.active.labels(*labels).set(0)
            last = PHASES[fault.action][-1] if PHASES[fault.action] else None
            rec.ended_at = rec.applied_at if last is None and rec.ok else rec.phase_at(last) if last else None
            with self._lock:   # one line per fault, whole, whichever thread ends first
                append_fault(self.folder, rec)

    def _apply(self, rec: FaultRecord) -> None:
        """Take the fault's action; `rec` says when, and what happened."""
        f = rec.fault
        if f.action in ("kill_replica", "kill_worker", "slow_gpu"):
            ref = self._replica(f)
            rec.replica = ref.replica_id
            if f.action == "kill_replica":
                rec.applied_at = time.time()
                kill_replica(ref)
                rec.ok, rec.detail = True, f"killed replica {ref.replica_id} of {f.target} (pid {ref.pid})"
            else:
                self._order(rec, ref, f.factor if f.factor is not None else 1.0)
        elif f.action == "restart_prometheus":
            if self.restart_prometheus is None:
                raise RuntimeError("this run has no Prometheus of its own to restart")
            rec.applied_at = time.time()
            stopped, ready = self.restart_prometheus()
            rec.phases |= {"stopped": stopped, "ready": ready}
            rec.ok, rec.detail = True, f"Prometheus stopped in {stopped:.1f} s, ready again after {ready:.1f} s"
        elif f.action == "pause_controller":
            if self.controller is None:
                raise RuntimeError("this run has no controller to pause")
            assert f.duration_s is not None
            rec.applied_at = time.time()
            self.controller.pause(f.duration_s)
            rec.ok, rec.detail = True, f"the controller takes no step for {f.duration_s:g} s"
        else:
            rec.applied_at = time.time()
            rec.ok, rec.detail = True, self.load.kill_worker(f.worker)

    def _replica(self, f: Fault) -> ReplicaRef:
        assert f.target is not None
        running = running_replicas(f.target)
        if f.replica >= len(running):
            raise RuntimeError(f"{f.target} has {len(running)} running replica(s) now; replica {f.replica} is not one")
        return running[f.replica]

    def _order(self, rec: FaultRecord, ref: ReplicaRef, factor: float) -> None:
        """An engine order through the fault board; the replica's report says when and what it did."""
        f = rec.fault
        assert f.action in ENGINE_ACTIONS
        order = ray.get(self._board.post.remote(ref.replica_id, f.action, f.rank, factor))
        done = ray.get(self._board.outcome.remote(order, ORDER_TIMEOUT_S))
        if done is None:
            raise RuntimeError(f"replica {ref.replica_id} of {f.target} did not carry out the order within "
                               f"{ORDER_TIMEOUT_S:g} s")
        rec.applied_at, rec.ok, rec.detail = done.at, done.ok, done.detail

    # --- what follows --------------------------------------------------------------------------------------
    def _follow(self, rec: FaultRecord) -> None:
        f = rec.fault
        applied = rec.applied_at
        assert applied is not None
        if f.action in ("kill_replica", "kill_worker"):
            self._replacement(rec)
        elif f.action == "slow_gpu":
            assert f.duration_s is not None
            cut_short = self._ended.wait(max(0.0, applied + f.duration_s - time.time()))
            order = ray.get(self._board.post.remote(rec.replica, "slow_gpu", f.rank, 1.0))
            done = None if cut_short else ray.get(self._board.outcome.remote(order, ORDER_TIMEOUT_S))
            if done is not None and done.ok:
                rec.phases["restored"] = done.at - applied
        elif f.action == "restart_prometheus" and self.controller is not None:
            controller = self.controller
            ready_at = applied + rec.phases["ready"]

            def fresh() -> bool:
                """Fresh data read after Prometheus was ready again; a stale read before it, if any, is `stale`
                (a quick restart with its series kept may never make the controller's data stale)."""
                board = controller.board
                if board.stale and board.time > applied and "stale" not in rec.phases:
                    rec.phases["stale"] = time.time() - applied
                return not board.stale and board.time > ready_at
            self._phase(rec, "fresh", fresh)
        elif f.action == "pause_controller":
            assert self.controller is not None and f.duration_s is not None
            controller = self.controller
            resumes = time.monotonic() - (time.time() - applied) + f.duration_s
            self._phase(rec, "resumed", lambda: controller.last_step > resumes)

    def _replacement(self, rec: FaultRecord) -> None:
        """Serve notices the replica is gone (not running any more), then a new one runs in its place."""
        f = rec.fault
        assert f.target is not None
        target = f.target

        def running() -> set[str]:
            return {r.replica_id for r in running_replicas(target)}
        before = running() | {rec.replica or ""}   # the killed one, listed or not yet
        self._phase(rec, "noticed", lambda: rec.replica not in running())

        def replaced() -> bool:
            now = running()
            if len(now) < len(before) or not now - before:
                return False
            rec.replacement = sorted(now - before)[0]
            return True
        self._phase(rec, "replaced", replaced)

    def _phase(self, rec: FaultRecord, name: str, seen: Callable[[], bool]) -> None:
        """Poll `seen` until it holds (phase `name` at that moment) or the run stops."""
        assert rec.applied_at is not None
        while not self._stop.is_set():
            try:
                if seen():
                    rec.phases[name] = time.time() - rec.applied_at
                    return
            except Exception as e:  # Serve or the controller busy: look again
                log.debug("watching %s: %s", name, e)
            self._stop.wait(POLL_S)
