"""The RoutingStore's versioning, long-poll and acknowledgement rules, and the serving set it carries (its Serve
wiring: test_ingress_replicas, test_fleet)."""

import asyncio
import time

import pytest

from deployments import routing_store
from deployments.routing import RoutingError
from deployments.routing_store import Routing, RoutingStore
from schema.deployment import ParallelConfig

START = {"chat": {"a": 1.0, "b": 1.0}, "batch": {"a": 1.0, "b": 1.0}}
A, B, C = ParallelConfig(name="a", tp=2), ParallelConfig(name="b", pp=2), ParallelConfig(name="c", tp=1, replicas=2)
LIVE = {"a": A, "b": B}


def new_store() -> RoutingStore:
    return RoutingStore(START, [c.model_dump(mode="json") for c in LIVE.values()])


async def follower(store: RoutingStore, name: str, applied: list[Routing], delay_s: float = 0.0) -> None:
    """An ingress replica: poll, apply (after `delay_s`), poll again with what it applied."""
    known = await store.watch(name, None, 0.0)
    applied.append(known)
    while True:
        new = await store.watch(name, known)
        await asyncio.sleep(delay_s)
        known = max(known, new, key=lambda r: r.version)
        applied.append(known)


async def test_an_update_returns_once_every_live_replica_applied_it() -> None:
    store = new_store()
    seen: dict[str, list[Routing]] = {"r1": [], "r2": []}
    tasks = [asyncio.create_task(follower(store, n, seen[n], delay_s=0.05 * i)) for i, n in enumerate(seen)]
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    result = await store.update({"chat": {"b": 1.0}})
    assert (result.applied, result.replicas) == (2, 2) and result.routing.version == 1
    assert time.monotonic() - t0 >= 0.05                        # it waited for the slower replica
    assert all(s[-1].version == 1 and s[-1].weights["chat"] == {"b": 1.0} for s in seen.values())
    assert result.routing.weights["batch"] == START["batch"]   # a partial update keeps the other classes
    for t in tasks:
        t.cancel()


async def test_a_replica_that_does_not_answer_holds_an_update_at_most_ack_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing_store, "ACK_S", 0.2)
    store = new_store()
    await store.watch("gone", None, 0.0)                        # polled once, never again
    t0 = time.monotonic()
    result = await store.update({"chat": {"a": 1.0}})
    assert (result.applied, result.replicas) == (0, 1) and 0.2 <= time.monotonic() - t0 < 1.0


async def test_a_restarted_store_is_reseeded_by_a_newer_version() -> None:
    store = new_store()                                  # a fresh store: version 0
    newer = Routing(7, {**START, "chat": {"a": 1.0}}, LIVE)
    assert await store.watch("r1", newer, 0.0) == newer          # a replica's poll brings it back
    result = await store.update({"batch": {"b": 1.0}}, known=Routing(5, START, LIVE))
    assert result.routing.version == 8 and result.routing.weights["chat"] == {"a": 1.0}
    fresh = new_store()                                  # an update may be the first call it gets
    result = await fresh.update({"batch": {"b": 1.0}}, known=newer)
    assert result.routing.version == 8 and result.routing.weights["chat"] == {"a": 1.0}


async def test_a_watch_returns_at_once_when_behind_and_after_the_timeout_when_current() -> None:
    store = new_store()
    current = await store.watch("r", None, 5.0)
    assert current.version == 0
    t0 = time.monotonic()
    assert await store.watch("r", current, 0.1) == current
    assert time.monotonic() - t0 >= 0.1


def test_a_configuration_joins_with_weight_0_and_a_version_of_its_own() -> None:
    start = Routing(0, START, LIVE)
    joined = start.with_config(C)
    assert joined.version == 1 and set(joined.configs) == {"a", "b", "c"} and joined.weights == START
    routed = joined.merged({"chat": {"c": 1.0}})
    assert routed.version == 2 and routed.weights["chat"] == {"c": 1.0} and routed.configs == joined.configs
    scaled = routed.with_config(C.model_copy(update={"replicas": 3}))
    assert scaled.configs["c"].replicas == 3 and scaled.weights == routed.weights   # a new spec keeps the routing


def test_weights_only_on_live_configurations_and_known_classes() -> None:
    start = Routing(0, START, LIVE)
    with pytest.raises(RoutingError, match="configuration c is not live; deploy it first"):
        start.merged({"chat": {"c": 1.0}})
    with pytest.raises(RoutingError, match="unknown SLA class 'code'"):
        start.merged({"code": {"a": 1.0}})
    with pytest.raises(RoutingError, match="at least one configuration needs a weight > 0"):
        start.merged({"chat": {"a": 0.0}})
    # zero weights on a configuration that is gone are dropped, not refused (a plan's table may still name it)
    assert start.merged({"chat": {"a": 1.0, "gone": 0.0}}).weights["chat"] == {"a": 1.0}


def test_a_held_row_only_when_asked_for() -> None:
    start = Routing(0, START, LIVE)
    held = start.merged({"chat": {}, "batch": {"a": 0.0, "b": 1.0}}, allow_hold=True)
    assert held.held() == ["chat"] and held.weights["chat"] == {}
    with pytest.raises(RoutingError, match="chat: give a non-empty mapping"):
        start.merged({"chat": {}})


def test_a_configuration_leaves_only_when_no_class_routes_to_it() -> None:
    start = Routing(0, START, LIVE)
    with pytest.raises(RoutingError, match="configuration a still serves batch, chat; route those classes"):
        start.without_config("a")
    moved = start.merged({"chat": {"a": 0.0, "b": 1.0}, "batch": {"b": 1.0}})
    gone = moved.without_config("a")
    assert set(gone.configs) == {"b"} and all("a" not in row for row in gone.weights.values())
    with pytest.raises(RoutingError, match="configuration a is not live"):
        gone.merged({"chat": {"a": 1.0}})


async def test_set_changes_reach_every_live_replica_before_they_return() -> None:
    store = new_store()
    seen: dict[str, list[Routing]] = {"r1": [], "r2": []}
    tasks = [asyncio.create_task(follower(store, n, seen[n], delay_s=0.05 * i)) for i, n in enumerate(seen)]
    await asyncio.sleep(0.05)
    added = await store.put_config(C)
    assert (added.applied, added.replicas) == (2, 2)
    assert all("c" in s[-1].configs for s in seen.values())
    routed = await store.update({"chat": {"c": 1.0}, "batch": {}}, allow_hold=True)
    assert routed.routing.held() == ["batch"] and all(s[-1].weights["chat"] == {"c": 1.0} for s in seen.values())
    with pytest.raises(RoutingError, match="still serves chat"):
        await store.remove("c")
    await store.update({"chat": {"a": 1.0}, "batch": {"a": 1.0}})
    removed = await store.remove("c")
    assert (removed.applied, removed.replicas) == (2, 2) and all("c" not in s[-1].configs for s in seen.values())
    for t in tasks:
        t.cancel()
