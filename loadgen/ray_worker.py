"""A load generator worker as a Ray actor, so that workers spread over the nodes of a cluster.

`run(share)` is a streaming generator: it yields the worker's event lines (worker.py) in batches, at
most every FLUSH_S, and ends after the END line; `start(epoch)` and `stop()` are the control calls.
The target URL must be reachable from every node, and a tokenizer path must exist on each of them.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import ray

from loadgen.split import Share
from loadgen.worker import run_share
from schema.traffic import RAY_WORKER_CPUS

FLUSH_S = 0.01   # batches of events at most this often (a killed node loses at most this much)


@ray.remote(num_cpus=RAY_WORKER_CPUS)
class LoadWorker:
    def __init__(self) -> None:
        self._stop: asyncio.Event | None = None
        self._started: asyncio.Future[float] | None = None

    def _control(self) -> tuple[asyncio.Event, "asyncio.Future[float]"]:
        if self._stop is None or self._started is None:
            self._stop, self._started = asyncio.Event(), asyncio.get_running_loop().create_future()
        return self._stop, self._started

    async def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    async def run(self, share: Share) -> AsyncIterator[list[bytes]]:
        stop, started = self._control()
        pending: list[bytes] = []
        wake = asyncio.Event()

        def emit(line: bytes) -> None:
            pending.append(line)
            wake.set()

        task = asyncio.create_task(run_share(share, emit, started, stop))
        try:
            while not (task.done() and not pending):
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                wake.clear()
                if pending:
                    batch = pending[:]
                    pending.clear()
                    yield batch
                    await asyncio.sleep(FLUSH_S)
            task.result()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def start(self, epoch: float) -> None:
        _, started = self._control()
        if not started.done():
            started.set_result(epoch)

    async def stop(self) -> None:
        stop, _ = self._control()
        stop.set()
