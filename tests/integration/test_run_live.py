"""`parallax run` end to end on the real stack (Ray Serve + sim engine + Prometheus + load generator):
the latency class's rate steps up mid-run and the controller's routing follows within a bounded time;
a configuration that starts failing a class's requests is drained from that class's routing, and
meanwhile Grafana's SLO-attainment panel and the controller's scoreboard give the same number; the run
folder and report are written and nothing is left running."""

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import ray
import yaml
from rich.console import Console

from controllers.controller import Controller
from controllers.run import run_scenario
from controllers.scoreboard import collect
from deployments.resolve import parse_scenario
from loadgen.records import read_records
from monitoring import rules as r
from monitoring.dashboards.check import ALL, interpolate, interval_macros, resolve_variables
from monitoring.dashboards.parallax import COMPARISON_UID
from monitoring.prometheus import read_state
from monitoring.promql import PromClient

pytestmark = pytest.mark.integration

STEP_AT_S = 40.0
FOLLOW_WITHIN_S = 35.0
DRAIN_WITHIN_S = 25.0
FAIL_AT_S = 15.0

# tp8: the lowest latency, but the simulator's TP8 holds ~16 req/s of these 1000-token prompts (engine
# clock); eight TP1 replicas hold about twice that. At 1 req/s (wall; ×4 on the engine clock) chat goes
# to tp8; at 6 req/s (24 on the engine clock) tp8 misses the SLO and chat must move to tp1x8.
SCENARIO = {
    "name": "step", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 2},
    "engine": {"kind": "sim", "time_scale": 4, "stream_interval_ms": 100},
    "configurations": [{"name": "tp8", "tp": 8}, {"name": "tp1x8", "tp": 1, "replicas": 8}],
    "server": {"port": 0},
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 450, "tpot_ms": 40, "attainment": 0.9},
                 "input": {"kind": "fixed", "value": 1000}, "output": {"kind": "fixed", "value": 16},
                 "arrival": {"kind": "steps", "steps": [{"at_s": 0, "rate": 1.0}, {"at_s": STEP_AT_S, "rate": 6.0}]}}],
    "load": {"duration_s": 85},
    "controller": {"policy": "best-per-class", "interval_s": 1, "window_s": 12, "min_samples": 5,
                   "min_dwell_s": 5, "hysteresis": 0.25, "explore_share": 0.2},
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run(scenario: dict, tmp_path: Path, on_started: Callable[[Controller], None] | None = None) -> Path:
    src = tmp_path / f"{scenario['name']}.yaml"
    src.write_text(yaml.safe_dump(scenario))
    resolved = parse_scenario(scenario, str(src), tmp_path)
    with open(os.devnull, "w") as quiet:
        result = run_scenario(resolved, tmp_path / "runs", Console(file=quiet), live=False, on_started=on_started)
    assert result.error is None, result.error
    return result.folder


def test_routing_follows_a_step_in_the_latency_class_rate(tmp_path: Path) -> None:
    prom_pids: list[int] = []

    def on_started(c: Controller) -> None:
        assert c.folder is not None
        handle = read_state(c.folder)
        assert handle is not None and handle.pid is not None
        prom_pids.append(handle.pid)

    folder = _run(SCENARIO, tmp_path, on_started)
    decisions = [json.loads(x) for x in (folder / "decisions.jsonl").read_text().splitlines()]
    meta = json.loads((folder / "load-meta.json").read_text())
    t0 = meta["started_at"]
    chosen = [(d["time"] - t0, d["chosen"], d["reason"]) for d in decisions if d["sla_class"] == "chat"]
    before_step = [c for t, c, _ in chosen if t < STEP_AT_S]
    assert before_step and before_step[-1] == "tp8", chosen
    after = [(t, c) for t, c, _ in chosen if t >= STEP_AT_S]
    assert after and after[0][1] == "tp1x8", chosen
    assert after[0][0] - STEP_AT_S <= FOLLOW_WITHIN_S, chosen
    for name in ("scenario.yaml", "records.jsonl", "scoreboard.csv", "weights.csv", "whatif.json", "report.html"):
        assert (folder / name).stat().st_size > 0, name
    # every record carries the server's own TTFT / TPOT (engine clock), a part of what the client measured
    ok = [r for r in read_records(folder / "records.jsonl") if r.status == "ok"]
    scale = SCENARIO["engine"]["time_scale"]  # type: ignore[index]
    assert ok and all(r.server_ttft_s is not None and r.server_tpot_s is not None for r in ok)
    assert all(0 < r.server_ttft_s <= r.ttft_s / scale + 1e-3 for r in ok)  # type: ignore[operator]
    # ... and names the replica that served it (the report's replay sends each request there)
    served_by = {c: {r.replica for r in ok if r.config == c} for c in ("tp8", "tp1x8")}
    assert len(served_by["tp8"]) == 1 and 1 < len(served_by["tp1x8"]) <= 8, served_by
    assert None not in served_by["tp8"] | served_by["tp1x8"]
    assert list((folder / "dashboards").rglob("*.json"))
    assert not ray.is_initialized()
    assert prom_pids and not _alive(prom_pids[0])


# H100 80 GB at 95%: one TP1 replica of the FP8 70B model has KV room for ~4,200 tokens, TP8 for ~1.5 M.
# From 15 s the `doc` class sends 6,000-token prompts: tp1x2 fails every one of them and must be drained
# from doc's routing (chat, whose prompts fit, keeps using it).
FAILING = {
    "name": "drain", "model": "llama-3.1-70b", "dtype": "fp8",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2},
    "engine": {"kind": "sim", "time_scale": 2, "stream_interval_ms": 100, "gpu_memory_utilization": 0.95,
               "max_num_batched_tokens": 2048},
    "configurations": [{"name": "tp8", "tp": 8}, {"name": "tp1x2", "tp": 1, "replicas": 2}],
    "server": {"port": 0},
    "classes": [
        {"name": "chat", "share": 0.5, "slo": {"ttft_ms": 2000, "tpot_ms": 200, "attainment": 0.5},
         "input": {"kind": "fixed", "value": 200}, "output": {"kind": "fixed", "value": 8},
         "arrival": {"kind": "poisson", "rate": 1.0}},
        {"name": "doc", "share": 0.5, "slo": {"ttft_ms": 5000, "tpot_ms": 200, "attainment": 0.5},
         "input": {"kind": "fixed", "value": 6000}, "output": {"kind": "fixed", "value": 8},
         "arrival": {"kind": "steps", "steps": [{"at_s": 0, "rate": 0.05}, {"at_s": FAIL_AT_S, "rate": 1.5}]}},
    ],
    "load": {"duration_s": 45, "workers": 2},   # `parallax run` uses the load generator's workers
    "controller": {"policy": "best-per-class", "interval_s": 1, "window_s": 10, "min_samples": 5,
                   "min_dwell_s": 5, "explore_share": 0.2},
}


Pair = tuple[str, str]


@dataclass
class Readings:
    """At one evaluation time: the comparison dashboard's SLO-attainment panel (source server, every
    configuration and class) and the controller's scoreboard, per (config, class); and the error ratios."""

    at: float
    panel: dict[Pair, float | None]
    board: dict[Pair, float | None]
    errors: dict[Pair, float]


@dataclass
class Watched:
    folder: Path
    readings: list[Readings] = field(default_factory=list)
    failure: str | None = None


def _panel_query(folder: Path, client: PromClient) -> str:
    """The "SLO attainment" panel's query as Grafana would send it (source=server, All configs and classes)."""
    dash = json.loads((folder / "dashboards" / "dashboards" / f"{COMPARISON_UID}.json").read_text())
    (panel,) = [p for p in dash["panels"] if p.get("title") == "SLO attainment"]
    values, _ = resolve_variables(dash, client, {"source": ["server"], "config": [ALL], "sla_class": [ALL]},
                                  interval_macros(2, 1, 60))
    return interpolate(panel["targets"][0]["expr"], values)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _watch(c: Controller, out: Watched, done: threading.Event) -> None:
    """Every 2 s while the load runs (it starts right after the controller), read the panel's query and the
    scoreboard at one past evaluation time."""
    assert c.folder is not None
    end = time.monotonic() + c.scenario.load.duration_s - 2
    handle = read_state(c.folder)
    assert handle is not None
    try:
        with PromClient(handle.url, timeout_s=10) as client:
            expr = _panel_query(c.folder, client)
            while not done.wait(2.0) and time.monotonic() < end:
                at = time.time() - 1.0

                def query(e: str, at: float = at) -> list[tuple[dict[str, str], float]]:
                    return [(s.labels, s.value) for s in client.query(e, at=at)]
                panel = {(s["config"], s["sla_class"]): _finite(v) for s, v in query(expr)}
                board = collect(query, c.cfg.window_s, at)
                errors = {(s["config"], s["sla_class"]): v for s, v in query(f'{r.ERROR_RATIO}{{source="server"}}')}
                out.readings.append(Readings(at, panel, {k: p.attainment for k, p in board.pairs.items()}, errors))
    except Exception as e:  # reported by the test, not lost in a thread
        out.failure = f"{type(e).__name__}: {e}"


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """One run of FAILING, watched from the controller's start to the end of the load."""
    tmp_path = tmp_path_factory.mktemp("drain")
    done = threading.Event()
    watchers: list[threading.Thread] = []
    out = Watched(tmp_path)

    def on_started(c: Controller) -> None:
        watchers.append(threading.Thread(target=_watch, args=(c, out, done), daemon=True))
        watchers[0].start()
    try:
        out.folder = _run(FAILING, tmp_path, on_started)
    finally:
        done.set()
        for w in watchers:
            w.join(30)
    yield out


def test_a_configuration_that_starts_failing_is_drained(drained: Watched) -> None:
    folder = drained.folder
    meta = json.loads((folder / "load-meta.json").read_text())
    t0 = meta["started_at"]
    assert [w["status"] for w in meta["workers"]] == ["finished", "finished"]
    decisions = [json.loads(x) for x in (folder / "decisions.jsonl").read_text().splitlines()]
    drains = [d for d in decisions if d["sla_class"] == "doc" and d["weights"]["tp1x2"] == 0.0]
    assert drains, decisions
    when = drains[0]["time"] - t0
    assert FAIL_AT_S <= when <= FAIL_AT_S + DRAIN_WITHIN_S, (when, drains[0]["reason"])
    assert drains[0]["evidence"]["tp1x2"]["failing"] and "tp1x2 is failing" in drains[0]["reason"]
    records = [json.loads(x) for x in (folder / "records.jsonl").read_text().splitlines()]
    late = [r for r in records if r["sla_class"] == "doc" and r["config"] == "tp1x2"
            and (r["send_time"] or 0) - t0 > when + 2]
    assert not late, f"{len(late)} doc requests still went to tp1x2 after it was drained"
    chat = [r for r in records if r["sla_class"] == "chat" and r["config"] == "tp1x2" and r["status"] == "ok"]
    assert chat, "chat's requests fit tp1x2 and should still be served there"
    assert sum(w["sent"] for w in meta["workers"]) == len(records)


def test_the_dashboard_panel_and_the_scoreboard_show_the_same_attainment(drained: Watched) -> None:
    """At each moment, Grafana's "SLO attainment" panel and the controller's scoreboard agree per (config,
    class), failed requests counting as misses (doc's on tp1x2 fail from FAIL_AT_S)."""
    assert drained.failure is None, drained.failure
    seen = [x for x in drained.readings if x.panel]
    assert len(seen) >= 10, f"only {len(seen)} readings with data"
    for x in seen:
        # (the board may also hold pairs only the client saw, e.g. a config "unknown": no attainment there)
        assert {k for k, v in x.board.items() if v is not None} == {k for k, v in x.panel.items() if v is not None}, x
        for pair, value in x.panel.items():
            assert x.board.get(pair) == value, (pair, x)
    failing = [(x, pair) for x in seen for pair, e in x.errors.items() if e > 0.2 and x.panel.get(pair) is not None]
    assert failing, "no window saw failed requests"
    for x, pair in failing:
        assert x.panel[pair] <= 1 - x.errors[pair] + 1e-9, (pair, x)  # type: ignore[operator]
