"""One replica of a role of a disaggregated configuration on vLLM: the prefill computes a prompt and keeps its
KV for the decode; the decode loads that KV through the connector and generates the output.

    handoff = await prefill_engine.prefill(request)          # on a prefill-role replica
    async for chunk in decode_engine.decode(request, handoff):  # on a decode-role replica
        ...

The handoff is a DecodeHandoff (disagg.py): plain data, so it crosses a Serve handle as it is.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from deployments.engines.base import GenerationRequest, TokenChunk
from deployments.engines.coalesce import coalesce
from deployments.engines.vllm.disagg import (
    DEFAULT_CONNECTOR,
    DecodeHandoff,
    HandoffError,
    KvConnector,
    decode_handoff,
    prefill_kv_params,
    role_launch,
)
from deployments.engines.vllm.engine import VllmEngine, detect_platform
from schema.deployment import DeploymentSpec, ParallelConfig, Role


class VllmRoleEngine(VllmEngine):
    """A VllmEngine whose AsyncLLM carries the KV connector of its role (prefill or decode)."""

    def __init__(self, spec: DeploymentSpec, config: ParallelConfig, role: Role, *, tp: int, pp: int,
                 connector: KvConnector = DEFAULT_CONNECTOR, platform: str | None = None,
                 replica_rank: int = 0, host: str = "127.0.0.1", port_base: int | None = None,
                 storage_path: str | None = None):
        """The role's tp×pp engine; the keyword arguments are disagg.role_launch's."""
        platform = platform or detect_platform()
        launch = role_launch(spec, config, role, tp=tp, pp=pp, platform=platform, connector=connector,
                             replica_rank=replica_rank, host=host, port_base=port_base,
                             storage_path=storage_path)
        super().__init__(spec, config, platform, launch=launch)
        self.role = role
        self.connector = connector

    def _expect(self, role: Role) -> None:
        if self.role != role:
            raise HandoffError(f"{self.role} role asked to {role}: send it to a {role}-role replica")

    async def prefill(self, request: GenerationRequest) -> DecodeHandoff:
        """Compute the request's prompt (and one token, discarded) and return the decode's parameters."""
        self._expect("prefill")
        from vllm import SamplingParams

        if self._llm is None:
            raise RuntimeError("engine not started; call start() first")
        kv_params = prefill_kv_params(self.connector)
        params = SamplingParams(max_tokens=1, temperature=request.temperature,
                                extra_args={"kv_transfer_params": kv_params} if kv_params else None)
        final: Any = None
        try:
            async for out in self._llm.generate(self._prompt(request), params, request.request_id):
                final = out
        except asyncio.CancelledError:
            await self.abort(request.request_id)
            raise
        if final is None:
            raise HandoffError(f"prefill role produced no output for request {request.request_id}")
        return decode_handoff(final, self.connector)

    def decode(self, request: GenerationRequest, handoff: DecodeHandoff) -> AsyncIterator[TokenChunk]:
        """Stream the request's output, its prompt's KV loaded from the prefill role (see generate)."""
        self._expect("decode")
        return coalesce(self._decode(replace(request, prompt_token_ids=handoff.prompt_token_ids),
                                     handoff.kv_transfer_params), self.stream_interval_s)

    async def _decode(self, request: GenerationRequest,
                      kv_transfer_params: dict[str, Any] | None) -> AsyncIterator[TokenChunk]:
        async for chunk in self._generate(request, kv_transfer_params):
            if chunk.finish_reason == "error":
                # vLLM's kv_load_failure_policy "fail" (its default): the KV did not arrive.
                raise HandoffError(f"decode role could not load request {request.request_id}'s KV from the "
                                   "prefill role (vLLM finished it with finish_reason=error)")
            yield chunk
