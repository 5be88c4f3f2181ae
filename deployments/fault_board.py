"""The channel that reaches one replica's engine in a fault experiment (`kill_worker`, `slow_gpu`).

A Serve call lands on whichever replica Serve picks; a fault must hit the one chosen. So the run posts an
order naming the replica (Serve's replica id) on a small board, a Ray actor it creates and kills, and the
replicas of a configuration that a scenario's engine faults aim at long-poll it (as the ingress replicas
follow the routing store): an order reaches its replica within milliseconds, and the replica reports back
what it did. An order names one replica id, so a replacement (a new id) never takes its predecessor's.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import ray

from deployments.engines.base import Engine

log = logging.getLogger("ray.serve")

BOARD_NAME = "parallax-fault-board"
BOARD_NAMESPACE = "parallax"
POLL_S = 5.0        # a watch with nothing new returns after this long
LOOKUP_S = 1.0      # how often a replica looks for the board before the run has created it


@dataclass(frozen=True)
class EngineOrder:
    """One action on one replica's engine: `slow_gpu` sets GPU `rank`'s speed to `factor` (1: its own)."""

    id: int
    replica: str
    action: Literal["kill_worker", "slow_gpu"]
    rank: int
    factor: float = 1.0


@dataclass(frozen=True)
class OrderDone:
    """What the replica did with an order, and when (Unix time)."""

    id: int
    replica: str
    at: float
    ok: bool
    detail: str


class FaultBoard:
    """The orders of one run (a Ray actor: `fault_board()` starts it)."""

    def __init__(self) -> None:
        self._orders: list[EngineOrder] = []
        self._posted = asyncio.Event()
        self._done: dict[int, OrderDone] = {}
        self._reported = asyncio.Event()

    async def post(self, replica: str, action: Literal["kill_worker", "slow_gpu"], rank: int,
                   factor: float = 1.0) -> int:
        """Post an order; its id."""
        order = EngineOrder(len(self._orders) + 1, replica, action, rank, factor)
        self._orders.append(order)
        self._posted.set()
        self._posted = asyncio.Event()
        return order.id

    async def watch(self, replica: str, after: int, timeout_s: float = POLL_S) -> tuple[int, list[EngineOrder]]:
        """(the newest order id, the orders for `replica` posted after order `after`), once any order is posted
        after it (or after `timeout_s`)."""
        posted = self._posted
        if len(self._orders) <= after:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(posted.wait(), timeout_s)
        return len(self._orders), [o for o in self._orders[after:] if o.replica == replica]

    async def report(self, done: OrderDone) -> None:
        self._done[done.id] = done
        self._reported.set()
        self._reported = asyncio.Event()

    async def outcome(self, order: int, timeout_s: float) -> OrderDone | None:
        """What the replica did with `order`, once it has reported (None after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while order not in self._done:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reported.wait(), left)
        return self._done[order]


def fault_board() -> Any:
    """Start this run's board (an actor handle); `ray.kill` it when the run ends."""
    actor = ray.remote(num_cpus=0)(FaultBoard)
    return actor.options(name=BOARD_NAME, namespace=BOARD_NAMESPACE, max_concurrency=1000).remote()


def carry_out(order: EngineOrder, engine: Engine) -> OrderDone:
    """Apply one order to this replica's engine."""
    try:
        if order.action == "kill_worker":
            detail = engine.kill_rank(order.rank)
        else:
            detail = engine.slow_rank(order.rank, order.factor)
        ok = True
    except Exception as e:  # the order fails, never the replica
        ok, detail = False, f"{type(e).__name__}: {e}"
    return OrderDone(order.id, order.replica, time.time(), ok, detail)


async def follow_orders(replica: str, engine: Engine) -> None:
    """A replica's task: find the board (once the run has created it), then carry out its orders as they come."""
    board: Any = None
    seen = 0
    while True:
        try:
            if board is None:
                board = await asyncio.to_thread(ray.get_actor, BOARD_NAME, namespace=BOARD_NAMESPACE)
            seen, orders = await board.watch.remote(replica, seen)
            for order in orders:
                done = carry_out(order, engine)
                log.warning("fault order %d: %s", order.id, done.detail)
                await board.report.remote(done)
        except asyncio.CancelledError:
            raise
        except Exception:  # no board yet, or the run ended and took it away: look again later
            board = None
            await asyncio.sleep(LOOKUP_S)
