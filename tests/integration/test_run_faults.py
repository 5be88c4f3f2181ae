"""A scenario's faults in a short real `parallax run` (Ray Serve + sim engine + Prometheus + controller + load):
one of the two replicas of a configuration killed (Serve routes around it, so each configuration keeps its
share of the traffic), a GPU of another configuration slowed for a while, the controller paused, Prometheus
restarted. The faults are recorded with their times and phases, every planned request has exactly one record,
the slowed replica really slowed (the server's own TPOT rose while slowed, then came back), and the report
shows the Faults section.

How long each step took is printed with the prefix FIGURE.
"""

import os
import statistics
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from rich.console import Console

from controllers.faults.record import read_faults
from controllers.run import run_scenario
from deployments.resolve import parse_scenario
from loadgen.plan import Workload, build_plan
from loadgen.records import read_records

pytestmark = pytest.mark.integration

KILL_AT_S, SLOW_AT_S, SLOW_S, PAUSE_AT_S, PAUSE_S, RESTART_AT_S, LOAD_S = 4.0, 12.0, 12.0, 8.0, 3.0, 16.0, 38.0
SCENARIO: dict[str, Any] = {
    "name": "faults-live", "model": "llama-3.1-8b", "dtype": "bf16",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 1},
    # slow enough a clock that the replicas' event loops, sharing two busy cores, keep up with the tokens
    "engine": {"kind": "sim", "time_scale": 5, "stream_interval_ms": 50},
    "configurations": [{"name": "k", "tp": 1, "replicas": 2}, {"name": "s", "tp": 2}],
    "server": {"port": 0},
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 5000, "tpot_ms": 500},
                 "input": {"kind": "fixed", "value": 200}, "output": {"kind": "fixed", "value": 48}}],
    "load": {"arrival": {"kind": "poisson", "rate": 3.0}, "duration_s": LOAD_S, "timeout_s": 60},
    "controller": {"policy": "observe", "interval_s": 0.5, "window_s": 8},
    "monitoring": {"scrape_interval_s": 0.5},
    "faults": [{"at_s": KILL_AT_S, "action": "kill_replica", "target": "k"},
               # TP2: rank 1 at a fifth of its speed; its peer waits for it at every all-reduce
               {"at_s": SLOW_AT_S, "action": "slow_gpu", "target": "s", "rank": 1, "factor": 0.2,
                "duration_s": SLOW_S},
               {"at_s": PAUSE_AT_S, "action": "pause_controller", "duration_s": PAUSE_S},
               {"at_s": RESTART_AT_S, "action": "restart_prometheus"}],
}


def figure(name: str, **values: object) -> None:
    print(f"\nFIGURE {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def test_faults_are_applied_on_schedule_recorded_and_measured(tmp_path: Path) -> None:
    src = tmp_path / "faults-live.yaml"
    src.write_text(yaml.safe_dump(SCENARIO))
    resolved = parse_scenario(SCENARIO, str(src), tmp_path)
    with open(os.devnull, "w") as quiet:
        result = run_scenario(resolved, tmp_path / "runs", Console(file=quiet), live=False)
    assert result.error is None, result.error
    folder = result.folder
    assert not ray.is_initialized()

    kill, slow, pause, restart = read_faults(folder)
    for f in (kill, slow, pause, restart):
        assert f.ok and f.applied_at is not None, f.detail
        figure(f"fault-{f.fault.action}", late_s=round(f.applied_at - f.due_at, 2),
               phases_s={k: round(v, 2) for k, v in f.phases.items()})
        # on schedule: never early; late only by what taking the action costs (bounds a broken schedule only)
        assert 0 <= f.applied_at - f.due_at < 15
    assert kill.applied_at is not None and slow.applied_at is not None
    assert "killed replica" in kill.detail and kill.replica is not None
    # Serve noticed the dead replica and started another in its place (recorded even after the load)
    assert 0 <= kill.phases["noticed"] <= kill.phases["replaced"], kill.phases
    assert kill.replacement is not None and kill.replacement != kill.replica
    # restored once its duration was over (the restore is an order carried out by the replica, hence ≥)
    assert slow.detail.startswith("rank 1 at 0.2× speed") and SLOW_S <= slow.phases["restored"] < SLOW_S + 15
    # the controller stepped again once its pause was over; Prometheus came back and the controller read it again
    assert PAUSE_S <= pause.phases["resumed"] < PAUSE_S + 10
    assert 0 < restart.phases["stopped"] <= restart.phases["ready"] < restart.phases["fresh"], restart.phases

    # no request lost: exactly one record for every request the plan holds
    s = resolved.scenario
    planned = [p.request_id for step in build_plan(list(s.classes), s.load, Workload(list(s.classes)))
               for p in step.requests]
    records = read_records(folder / "records.jsonl")
    ids = [r.request_id for r in records]
    assert len(ids) == len(set(ids)) and set(ids) == set(planned), (len(planned), len(ids))

    # the slowed replica's own TPOT (engine clock) rose while it was slowed, and came back once restored
    assert slow.ended_at is not None
    on_s = [r for r in records if r.config == "s" and r.status == "ok" and r.server_tpot_s and r.send_time]
    before = [r.server_tpot_s for r in on_s if r.send_time < slow.applied_at - 1]      # type: ignore[operator]
    during = [r.server_tpot_s for r in on_s
              if slow.applied_at + 1 < r.send_time and r.send_time + (r.e2e_s or 0) < slow.ended_at]  # type: ignore[operator]
    after = [r.server_tpot_s for r in on_s if r.send_time > slow.ended_at + 1]        # type: ignore[operator]
    assert min(len(before), len(during), len(after)) >= 5, (len(before), len(during), len(after))
    tpot = {k: statistics.median(v) * 1e3 for k, v in (("before", before), ("during", during), ("after", after))}
    figure("slowed-tpot-ms", **{k: round(v, 2) for k, v in tpot.items()},
           requests=f"{len(before)}/{len(during)}/{len(after)}")
    assert tpot["during"] > 1.5 * tpot["before"], tpot
    assert tpot["after"] < 1.25 * tpot["before"], tpot

    page = (folder / "report.html").read_text()
    assert "<h2>Faults</h2>" in page and "kill_replica k[0]" in page and "slow_gpu s[0] rank 1 ×0.2" in page
    assert (folder / "faults.png").exists()
