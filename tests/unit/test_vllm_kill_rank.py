"""The vllm engine's kill_worker: the worker process of one rank, found among the engine's children by the
title vLLM gives it (`VLLM::Worker_PP<stage>_TP<rank>`, a suffix only where that dimension is > 1); here the
children are stand-in processes titled so (no vLLM started)."""

import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from deployments.engines.vllm.engine import VllmEngine
from schema.deployment import DeploymentSpec, EngineConfig, Hardware, ParallelConfig

TITLED = "import setproctitle, sys, time; setproctitle.setproctitle(sys.argv[1]); time.sleep(120)"


def engine(tp: int, pp: int) -> VllmEngine:
    spec = DeploymentSpec(model="llama-3.1-8b", hardware=Hardware(gpu="h100-sxm"),
                          engine=EngineConfig(kind="vllm", model_path="/models/m"),
                          configurations=[ParallelConfig(name="c", tp=tp, pp=pp)])
    return VllmEngine(spec, spec.configurations[0], platform="gpu")


@pytest.fixture
def workers() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    titles = ["VLLM::EngineCore", *(f"VLLM::Worker_PP{s}_TP{t}" for s in range(2) for t in range(2))]
    procs = {t: subprocess.Popen([sys.executable, "-c", TITLED, t]) for t in titles}
    try:
        yield procs
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_the_ranks_worker_and_only_it_is_killed(workers: dict[str, subprocess.Popen[bytes]]) -> None:
    eng = engine(2, 2)
    eng._children = [psutil.Process(p.pid) for p in workers.values()]
    deadline = time.monotonic() + 30
    for p in eng._children:     # each child has set its title before the engine looks
        while " ".join(p.cmdline()).strip() not in workers:
            assert time.monotonic() < deadline, "a stand-in worker did not set its title within 30 s"
            time.sleep(0.01)
    target = workers["VLLM::Worker_PP1_TP0"]
    assert eng.kill_rank(2) == f"rank 2: killed vLLM's worker VLLM::Worker_PP1_TP0 (pid {target.pid})"
    assert target.wait(10) == -9
    assert all(p.poll() is None for t, p in workers.items() if t != "VLLM::Worker_PP1_TP0")


def test_a_rank_without_its_worker_process_is_refused() -> None:
    eng = engine(2, 1)
    eng._children = []
    with pytest.raises(RuntimeError, match="no worker process titled VLLM::Worker_TP1"):
        eng.kill_rank(1)
    with pytest.raises(RuntimeError, match="a real GPU cannot be slowed"):
        eng.slow_rank(0, 0.5)
