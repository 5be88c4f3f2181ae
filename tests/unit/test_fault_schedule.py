"""FaultSchedule without a cluster: faults wait for the load's start and their at_s, the controller's pause
and a load worker's death are taken and followed, a fault that cannot be taken is recorded as such, one not
yet due when the load ends is never taken, and the metrics say which faults were applied and are in effect."""

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controllers.controller import Controller
from controllers.faults.record import read_faults
from controllers.faults.schedule import FaultSchedule
from deployments.resolve import parse_scenario
from loadgen.control import LoadControl
from monitoring import metrics as m

SCENARIO: dict[str, Any] = {
    "name": "sched", "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm", "gpus_per_node": 1},
    "configurations": [{"name": "a", "tp": 1}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500},
                 "input": {"kind": "fixed", "value": 10}, "output": {"kind": "fixed", "value": 10}}],
    "load": {"duration_s": 30, "workers": 2},
    "controller": {"interval_s": 0.05},
    "faults": [{"at_s": 0.2, "action": "pause_controller", "duration_s": 0.6},
               {"at_s": 0.3, "action": "kill_load_worker", "worker": 1},
               {"at_s": 0.4, "action": "restart_prometheus"},
               {"at_s": 20, "action": "pause_controller", "duration_s": 1}],
}


class Routing:
    def set_weights(self, weights: object) -> None:
        pass


def value(registry: CollectorRegistry, name: str, fault: int) -> float | None:
    return registry.get_sample_value(name, {"fault": str(fault), "action": SCENARIO["faults"][fault]["action"],
                                            "target": ""})


def test_faults_are_taken_on_the_loads_schedule_followed_and_recorded(tmp_path: Path) -> None:
    s = parse_scenario(SCENARIO).scenario
    controller = Controller(s, lambda _q: [], Routing(), folder=None)
    controller.start()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    registry = CollectorRegistry()
    load = LoadControl()
    said: list[str] = []
    schedule = FaultSchedule(s, tmp_path, registry, load, controller, restart_prometheus=None, say=said.append)
    try:
        assert value(registry, m.FAULT_PREFIX + m.FAULT_APPLIED + "_total", 0) == 0   # every series from the start
        schedule.start()
        time.sleep(0.5)
        assert not read_faults(tmp_path)          # nothing before the load starts
        t0 = time.time()

        def kill() -> str:
            worker.kill()
            return f"killed pid {worker.pid}"
        load.started(t0, [lambda: "not this one", kill])
        deadline = time.monotonic() + 20
        while len(read_faults(tmp_path)) < 3 and time.monotonic() < deadline:
            assert value(registry, m.FAULT_PREFIX + m.FAULT_ACTIVE, 3) == 0
            time.sleep(0.05)
        pause, killed, prom = read_faults(tmp_path)
        schedule.stop(follow_s=5.0)
    finally:
        controller.stop()
        worker.kill()
        worker.wait()
    assert worker.returncode == -9
    assert pause.ok and pause.applied_at is not None and 0 <= pause.applied_at - (t0 + 0.2) < 1.0
    assert pause.phases["resumed"] >= 0.6
    assert pause.ended_at == pytest.approx(pause.applied_at + pause.phases["resumed"])
    assert killed.ok and killed.detail == f"killed pid {worker.pid}" and killed.ended_at == killed.applied_at
    assert not prom.ok and prom.detail == "RuntimeError: this run has no Prometheus of its own to restart"
    assert prom.ended_at is None
    later = read_faults(tmp_path)[3]
    assert later.index == 3 and not later.ok and later.applied_at is None
    assert later.detail == "the run ended before it was due"
    applied = [value(registry, m.FAULT_PREFIX + m.FAULT_APPLIED + "_total", i) for i in range(4)]
    assert applied == [1, 1, 0, 0]
    assert [value(registry, m.FAULT_PREFIX + m.FAULT_ACTIVE, i) for i in range(4)] == [0, 0, 0, 0]
    assert any("pause_controller: the controller takes no step for 0.6 s" in line for line in said)
    assert any("restart_prometheus: not applied" in line for line in said)
