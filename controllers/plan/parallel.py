"""Where the planner's simulations run: worker processes on this machine, or Ray tasks on the cluster in
RAY_ADDRESS (the code travels with the tasks: `deployments.cluster.cluster_runtime_env`)."""

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Protocol, TypeVar

import ray

from deployments.cluster import cluster_runtime_env

T = TypeVar("T")
R = TypeVar("R")

class Runner(Protocol):
    """Maps a picklable function over tasks; results in task order."""

    where: str

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]: ...


class InProcess:
    where = "this process"

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        return [fn(t) for t in tasks]


class Processes:
    """A pool of forked worker processes (they inherit the imported modules: no start-up cost)."""

    def __init__(self, workers: int):
        self.where = f"{workers} worker processes"
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        return list(self._pool.map(fn, tasks, chunksize=1))

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class RayTasks:
    """One Ray task per planner task on the cluster in RAY_ADDRESS."""

    def __init__(self, address: str):
        self._owned = not ray.is_initialized()
        if self._owned:
            ray.init(address=address, log_to_driver=False, runtime_env=cluster_runtime_env())
        self.where = f"Ray tasks on {address} ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> list[R]:
        remote = ray.remote(num_cpus=1)(fn)
        return list(ray.get([remote.remote(t) for t in tasks]))

    def close(self) -> None:
        if self._owned:
            ray.shutdown()


@contextmanager
def runner(workers: int | None = None) -> Iterator[Runner]:
    """Ray tasks when RAY_ADDRESS is set; else `workers` processes (default: one per CPU core)."""
    address = os.environ.get("RAY_ADDRESS")
    if address:
        r: InProcess | Processes | RayTasks = RayTasks(address)
    else:
        n = workers if workers is not None else (os.cpu_count() or 1)
        r = Processes(n) if n > 1 else InProcess()
    try:
        yield r
    finally:
        if not isinstance(r, InProcess):
            r.close()
