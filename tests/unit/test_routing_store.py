"""The RoutingStore's versioning, long-poll and acknowledgement rules (its Serve wiring: test_ingress_replicas)."""

import asyncio
import time

import pytest

from deployments import routing_store
from deployments.routing_store import Routing, RoutingStore

START = {"chat": {"a": 1.0, "b": 1.0}, "batch": {"a": 1.0, "b": 1.0}}


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
    store = RoutingStore(START)
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
    store = RoutingStore(START)
    await store.watch("gone", None, 0.0)                        # polled once, never again
    t0 = time.monotonic()
    result = await store.update({"chat": {"a": 1.0}})
    assert (result.applied, result.replicas) == (0, 1) and 0.2 <= time.monotonic() - t0 < 1.0


async def test_a_restarted_store_is_reseeded_by_a_newer_version() -> None:
    store = RoutingStore(START)                                  # a fresh store: version 0
    newer = Routing(7, {**START, "chat": {"a": 1.0}})
    assert await store.watch("r1", newer, 0.0) == newer          # a replica's poll brings it back
    result = await store.update({"batch": {"b": 1.0}}, known=Routing(5, START))
    assert result.routing.version == 8 and result.routing.weights["chat"] == {"a": 1.0}
    fresh = RoutingStore(START)                                  # an update may be the first call it gets
    result = await fresh.update({"batch": {"b": 1.0}}, known=newer)
    assert result.routing.version == 8 and result.routing.weights["chat"] == {"a": 1.0}


async def test_a_watch_returns_at_once_when_behind_and_after_the_timeout_when_current() -> None:
    store = RoutingStore(START)
    current = await store.watch("r", None, 5.0)
    assert current.version == 0
    t0 = time.monotonic()
    assert await store.watch("r", current, 0.1) == current
    assert time.monotonic() - t0 >= 0.1
