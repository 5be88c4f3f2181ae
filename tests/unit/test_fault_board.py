"""The fault board (deployments/fault_board.py) without Ray: an order reaches only the replica it names, at
once, and the replica's report comes back; carrying an order out on a simulated engine."""

import asyncio

import pytest

from deployments.catalog.gpus import resolve_gpu
from deployments.catalog.models import resolve_model
from deployments.engines.sim.engine import SimEngine
from deployments.fault_board import EngineOrder, FaultBoard, carry_out
from schema.deployment import DeploymentSpec, EngineConfig, Hardware, ParallelConfig


async def test_an_order_reaches_its_replica_at_once_and_no_other() -> None:
    board = FaultBoard()
    mine = asyncio.create_task(board.watch("r1", 0, timeout_s=30))
    other = asyncio.create_task(board.watch("r2", 0, timeout_s=30))
    await asyncio.sleep(0.05)
    assert not mine.done()                                  # a long poll: nothing posted yet
    order = await board.post("r1", "slow_gpu", 3, 0.5)
    seen, orders = await asyncio.wait_for(mine, 1)
    assert seen == order == 1 and orders == [EngineOrder(1, "r1", "slow_gpu", 3, 0.5)]
    assert await asyncio.wait_for(other, 1) == (1, [])      # woken, but the order is not r2's
    assert await board.watch("r1", seen, timeout_s=0.05) == (1, [])   # nothing new after it
    later = asyncio.create_task(board.watch("r3", 0, timeout_s=30))
    assert (await asyncio.wait_for(later, 1)) == (1, [])    # a replica that starts later skips others' orders


async def test_the_replicas_report_comes_back_and_a_missing_one_times_out() -> None:
    board = FaultBoard()
    order = await board.post("r1", "kill_worker", 1)
    waiting = asyncio.create_task(board.outcome(order, 5))
    assert await board.outcome(99, 0.05) is None
    eng = engine()
    done = carry_out(EngineOrder(order, "r1", "kill_worker", 1), eng)
    await board.report(done)
    got = await asyncio.wait_for(waiting, 1)
    assert got == done and got.ok and "rank 1 failed" in got.detail


def engine() -> SimEngine:
    s = DeploymentSpec(model="llama-3.1-70b", dtype="fp8", hardware=Hardware(gpu="h100-sxm"),
                       engine=EngineConfig(), configurations=[ParallelConfig(name="c", tp=2, pp=2)])
    return SimEngine(s, s.configurations[0], resolve_model(s.model), resolve_gpu(s.hardware.gpu))


@pytest.mark.parametrize(("order", "ok", "words"), [
    (EngineOrder(1, "r", "slow_gpu", 2, 0.5), True, "rank 2 at 0.5× speed"),
    (EngineOrder(1, "r", "slow_gpu", 9, 0.5), False, "ValueError: rank 9: this replica has ranks 0 to 3"),
])
def test_carrying_out_an_order_never_raises(order: EngineOrder, ok: bool, words: str) -> None:
    done = carry_out(order, engine())
    assert done.ok is ok and words in done.detail
