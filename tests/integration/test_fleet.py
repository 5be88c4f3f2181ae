"""The fleet executes planned transitions while a load runs (real local Ray and Serve, real HTTP, simulated
engines on 4 logical GPUs): make-before-break TP2 → 2×TP1 and back, then the hold path (TP2 → TP4, where
the target needs every GPU, and TP4 → 2×TP2, where one replica holds every GPU). Every request sent gets an
`ok` record; a held request's wait is in its TTFT; a removed configuration's placement groups are released
and its GPUs reused by the next configuration."""

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import ray

from controllers.plan.candidates import Pool, Shape
from controllers.transition.planner import ServingSet, Transition, plan_transition
from deployments import fleet
from deployments.deploy import DeployedApp, config_placements, deployed_locally
from deployments.placement import gpu_nodes
from deployments.resolve import Resolved, parse_scenario
from deployments.startup import start_seconds
from deployments.steps import Deploy, Remove, Route, Scale, Step
from loadgen.control import LoadControl
from loadgen.plan import Workload, build_plan
from loadgen.records import RequestRecord, read_records
from loadgen.runner import run_load
from schema.traffic import LoadConfig
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

STARTUP_S = 1.0   # the simulated engines' start (engine.startup_s): a Deploy waits at least this long
SCENARIO = {
    "name": "fleet", "model": "llama-3.1-8b",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 1},
    "engine": {"kind": "sim", "max_model_len": 2048, "startup_s": STARTUP_S},
    "configurations": [{"name": "tp2", "tp": 2}],
    "server": {"hold_queue_size": 512, "hold_max_wait_s": 120},
    "classes": [
        {"name": "chat", "share": 0.5, "slo": {"ttft_ms": 1000}, "input": {"kind": "fixed", "value": 16},
         "output": {"kind": "fixed", "value": 4}},
        {"name": "batch", "share": 0.5, "slo": {"ttft_ms": 5000}, "input": {"kind": "fixed", "value": 32},
         "output": {"kind": "fixed", "value": 4}},
    ],
}
CLASSES = ("chat", "batch")
STEP_TIMEOUT_S = 120.0
RATE = 8.0


@dataclass
class Fleet:
    resolved: Resolved
    app: DeployedApp
    used: set[str]


@pytest.fixture(scope="module")
def live() -> Iterator[Fleet]:
    resolved = parse_scenario(SCENARIO)
    with deployed_locally(resolved) as app:
        yield Fleet(resolved, app, {"tp2"})


def _transition(f: Fleet, target: Pool) -> Transition:
    routing = fleet.serving_set()
    t = plan_transition(ServingSet(tuple(routing.configs.values()), routing.weights), [target],
                        gpu_nodes(ray.nodes()), start_seconds(f.resolved), drain_s=30.0, used_names=f.used)
    f.used |= {c.name for c in t.configs}
    return t


@dataclass
class Executed:
    records: list[RequestRecord]
    steps: list[tuple[object, float, float, float]]   # (step, wall start, wall end, seconds execute returned)
    done_at: float                                     # wall time the last step ended


def _execute_under_load(f: Fleet, steps_to_take: Sequence[Step], out: Path) -> Executed:
    """Run a constant load, execute the steps once it flows, then stop the load once every request sent by the
    last step's end has its answer (the backlog a hold released drains: on a busy machine that takes a while) and
    at least 2 s after that step."""
    stop = asyncio.Event()
    loop_ready = threading.Event()
    holder: dict[str, asyncio.AbstractEventLoop] = {}
    classes = parse_scenario(SCENARIO).scenario.classes
    load = LoadConfig(arrival={"kind": "constant", "rate": RATE}, duration_s=600)
    control = LoadControl()
    answered: set[str] = set()

    def drive() -> None:
        async def main() -> None:
            holder["loop"] = asyncio.get_running_loop()
            loop_ready.set()
            await run_load(f.app.target, classes, load, out, stop=stop, control=control,
                           on_record=lambda r: answered.add(r.request_id))
        asyncio.run(main())

    side = threading.Thread(target=drive, daemon=True)
    side.start()
    assert loop_ready.wait(30)
    time.sleep(2.0)   # the load flows before the first step
    steps = []
    for step in steps_to_take:
        t0 = time.time()
        took = fleet.execute(step, f.resolved, STEP_TIMEOUT_S)
        steps.append((step, t0, time.time(), took))
    done_at = time.time()
    epoch = control.wait_start(0)
    assert epoch is not None
    due = {p.request_id for p in build_plan(list(classes), load, Workload(list(classes)))[0].requests
           if epoch + p.at_s <= done_at}
    wait_until(lambda: due <= answered, STEP_TIMEOUT_S,
               lambda: f"answers to the {len(due - answered)} requests sent before the last step ended")
    time.sleep(max(0.0, done_at + 2.0 - time.time()))   # the load goes on after the last step
    holder["loop"].call_soon_threadsafe(stop.set)
    side.join(timeout=120)
    assert not side.is_alive()
    return Executed(read_records(out), steps, done_at)


def _check_nothing_lost(ex: Executed) -> None:
    """Every request sent got an ok answer; the only others are those the load's stop cut off at the end."""
    sent = [r for r in ex.records if r.send_time is not None]
    assert len(sent) >= RATE * 3
    bad = [r for r in sent if r.status != "ok" and not (r.status == "cancelled" and r.send_time >= ex.done_at)]
    assert not bad, [(r.request_id, r.status, r.http_status, r.error) for r in bad[:5]]


def _check_removed_released(t: Transition) -> None:
    removed = [s.name for s in t.steps if isinstance(s, Remove)]
    assert removed
    assert config_placements(removed) == {n: [] for n in removed}
    table = ray.util.placement_group_table().values()
    for name in removed:
        mine = [pg for pg in table if pg.get("name", "").startswith(f"SERVE_REPLICA::parallax-{name}#")]
        assert mine and all(pg["state"] == "REMOVED" for pg in mine)


def _check_target(t: Transition, f: Fleet) -> None:
    routing = fleet.serving_set()
    assert set(routing.configs) == set(t.names)
    assert routing.weights == t.weights
    placed = config_placements(list(t.names))
    assert sum(len(b.bundles) for reps in placed.values() for b in reps) == sum(c.gpus for c in t.configs)
    assert all(b.state == "CREATED" for reps in placed.values() for b in reps)


def test_make_before_break_tp2_to_two_tp1_and_back(live: Fleet, tmp_path: Path) -> None:
    there = _transition(live, Pool(Shape(1, 1), 2, CLASSES))
    assert not there.held and isinstance(there.steps[0], Deploy)   # 2 GPUs are free: no class waits
    ex = _execute_under_load(live, there.steps, tmp_path / "there")
    _check_nothing_lost(ex)
    _check_removed_released(there)
    _check_target(there, live)
    deploy_took = [took for step, *_, took in ex.steps if isinstance(step, Deploy)]
    assert deploy_took and min(deploy_took) >= STARTUP_S        # the simulated start is waited
    served = {r.config for r in ex.records if r.status == "ok"}
    assert {"tp2", "tp1"} <= served

    back = _transition(live, Pool(Shape(2, 1), 1, CLASSES))
    assert not back.held
    ex = _execute_under_load(live, back.steps, tmp_path / "back")
    _check_nothing_lost(ex)
    _check_removed_released(back)
    _check_target(back, live)
    # the new TP2 reuses the GPUs the first TP2 gave back (4 in all: it could only go there or on tp1's)
    assert {"tp1", back.names[0]} <= {r.config for r in ex.records if r.status == "ok"}
    # a removed configuration can no longer be routed to, through the controller's endpoint either
    r = httpx.put(f"{live.app.url}/v1/routing", json={"weights": {"chat": {"tp1": 1}}}, timeout=30)
    assert r.status_code == 400 and "configuration tp1 is not live" in r.json()["error"]["message"]
    step = Route({"chat": {"tp1": 1.0}}, "test")
    with pytest.raises(fleet.FleetError, match=r"^route chat → tp1: test: configuration tp1 is not live") as e:
        fleet.execute(step, live.resolved, 10.0)
    assert e.value.step == step


def test_hold_when_the_target_needs_every_gpu_and_when_one_replica_holds_them_all(live: Fleet, tmp_path: Path
                                                                                   ) -> None:
    for i, target in enumerate([Pool(Shape(4, 1), 1, CLASSES), Pool(Shape(2, 1), 2, CLASSES)]):
        t = _transition(live, target)
        assert sorted(t.held) == sorted(CLASSES), [s.line for s in t.steps]
        ex = _execute_under_load(live, t.steps, tmp_path / f"hold{i}")
        _check_nothing_lost(ex)
        _check_removed_released(t)
        _check_target(t, live)
        routes = [(s, start, end) for s, start, end, _ in ex.steps if isinstance(s, Route)]
        held_from = next(end for s, _, end in routes if s.held)          # every ingress replica holds by then
        released = next(start for s, start, _ in routes if not s.held and start > held_from)  # none released before
        assert released - held_from >= STARTUP_S
        held = [r for r in ex.records if r.send_time is not None and held_from < r.send_time < released - 0.5]
        assert held, "requests arrived during the hold"
        for r in held:   # each waited at least until the routing that released its class: in its TTFT
            assert r.status == "ok" and r.ttft_s is not None
            assert r.ttft_s >= released - r.send_time, (r.request_id, r.ttft_s, released - r.send_time)


def test_scale_in_place_under_load(live: Fleet, tmp_path: Path) -> None:
    """The replicas of the configuration serving every class go 2 → 1 → 2 in place; none of its requests fail."""
    routing = fleet.serving_set()
    name, config = max(routing.configs.items(), key=lambda kv: kv[1].gpus)
    replicas = config.replicas
    assert replicas >= 2, "the earlier tests end on 2×TP2"
    ex = _execute_under_load(live, [Scale(name, replicas - 1, "test"), Scale(name, replicas, "test")],
                             tmp_path / "scale")
    _check_nothing_lost(ex)
    assert ex.steps[1][3] >= STARTUP_S                       # the new replica's simulated start is waited
    assert fleet.serving_set().configs[name].replicas == replicas
    assert len(config_placements([name])[name]) == replicas
