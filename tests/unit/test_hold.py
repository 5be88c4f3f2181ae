"""The ingress's hold queue: a held request waits until its class is served, bounded in number and in time."""

import asyncio
import time

import pytest

from deployments.hold import HoldExpired, HoldFull, HoldQueue


async def test_a_served_class_never_waits() -> None:
    q = HoldQueue(size=1, max_wait_s=1.0)
    assert await q.wait("chat", lambda: True) == 0.0 and q.waiting == 0


async def test_held_requests_go_on_when_a_routing_serves_their_class() -> None:
    q = HoldQueue(size=4, max_wait_s=5.0)
    served = False
    waiters = [asyncio.create_task(q.wait("chat", lambda: served)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert q.waiting == 3 and not any(w.done() for w in waiters)
    q.release()                                  # a routing that still holds the class: they keep waiting
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    served = True
    t0 = time.monotonic()
    q.release()
    waited = await asyncio.gather(*waiters)
    assert time.monotonic() - t0 < 0.5 and all(w >= 0.1 for w in waited) and q.waiting == 0


async def test_a_full_queue_refuses_with_503_at_once() -> None:
    q = HoldQueue(size=2, max_wait_s=5.0)
    waiters = [asyncio.create_task(q.wait("chat", lambda: False)) for _ in range(2)]
    await asyncio.sleep(0.02)
    t0 = time.monotonic()
    with pytest.raises(HoldFull) as e:
        await q.wait("batch", lambda: False)
    assert time.monotonic() - t0 < 0.1 and e.value.status == 503 and e.value.code == "hold_full"
    assert "batch is held" in e.value.message and "full (2 requests)" in e.value.message
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert q.waiting == 0                       # a cancelled waiter (client gone) frees its place


async def test_a_request_held_past_max_wait_is_refused_and_frees_its_place() -> None:
    q = HoldQueue(size=1, max_wait_s=0.2)
    t0 = time.monotonic()
    with pytest.raises(HoldExpired) as e:
        await q.wait("chat", lambda: False)
    assert 0.2 <= time.monotonic() - t0 < 0.6 and e.value.status == 503 and e.value.code == "hold_expired"
    assert q.waiting == 0
    assert await q.wait("chat", lambda: True) == 0.0
