"""Prefill/decode disaggregation on the CPU build of vLLM: the tiny Llama as 1 prefill + 1 decode engine, the
KV handed over by NIXL (host memory, UCX), through the testbed's role engines and handoff (role_engine.py).

The decode engine must load the whole prompt's KV instead of recomputing it (its connector hits), and its
output must equal the prefill engine's own aggregated output for the same prompt at temperature 0. Zeroed KV
changes every one of the greedy tokens of this prompt (checked once by hand with the ExampleConnector), so
equal text means the transferred KV is the prompt's. A handoff that names a prefill no one serves ends as a
HandoffError naming the decode role, within a bound, never a hang. Nothing may be left behind.
"""

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import yaml

from deployments.engines.base import GenerationRequest, TokenChunk
from deployments.engines.vllm.disagg import HandoffError
from deployments.engines.vllm.role_engine import VllmRoleEngine
from deployments.engines.vllm.tiny_model import write_tiny_model
from deployments.resolve import parse_scenario
from monitoring.metrics import EXTERNAL_PREFIX_CACHE_HITS
from monitoring.ports import free_port
from schema.deployment import ParallelConfig
from tests.support.vllm_tier import REPO, TINY_MODEL, Residue, set_cache_env

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

SCENARIO = REPO / "scenarios" / "cpu-vllm-tiny.yaml"
PD = ParallelConfig(name="pd")
PROMPT = list(range(3, 103))  # 100 token ids: three full KV blocks of 32 and a partial one
REQUEST = GenerationRequest(request_id="pd-1", prompt="", prompt_token_ids=PROMPT, max_tokens=8,
                            sla_class="chat", temperature=0.0, ignore_eos=True)


async def _text(chunks: AsyncIterator[TokenChunk]) -> tuple[str, int, str | None]:
    """The streamed text, its token count and its finish reason."""
    out = [c async for c in chunks]
    return "".join(c.text for c in out), sum(c.num_tokens for c in out), out[-1].finish_reason


async def test_prefill_hands_its_kv_to_decode_which_answers_as_one_engine() -> None:
    assert importlib.util.find_spec("nixl"), "the NIXL connector needs the nixl package: pyproject's cpu extra"
    set_cache_env()
    write_tiny_model(TINY_MODEL)
    spec = parse_scenario(yaml.safe_load(SCENARIO.read_text()), str(SCENARIO), SCENARIO.parent).scenario
    env_before = dict(os.environ)  # the engines set their own (NIXL side channel, KV cache size)
    before = Residue.now()
    prefill = VllmRoleEngine(spec, PD, "prefill", tp=1, pp=1, platform="cpu", port_base=free_port())
    decode = VllmRoleEngine(spec, PD, "decode", tp=1, pp=1, platform="cpu", port_base=free_port())
    try:
        await prefill.start()
        await decode.start()

        handoff = await prefill.prefill(REQUEST)
        assert handoff.prompt_token_ids == PROMPT
        text, tokens, finish = await _text(decode.decode(REQUEST, handoff))
        loaded = decode.stats().extra.get(EXTERNAL_PREFIX_CACHE_HITS, 0.0)

        # The same prompt computed start to end by one engine (the prefill's, without a handoff).
        ref_text, ref_tokens, _ = await _text(prefill.generate(replace(REQUEST, request_id="aggregated")))
        assert (tokens, finish) == (ref_tokens, "length") == (8, "length")
        assert text == ref_text
        assert loaded == len(PROMPT), f"the decode engine loaded {loaded} prompt tokens through NIXL"

        # A handoff naming a prefill engine that serves nothing: an error naming the role, not a hang.
        params = dict(handoff.kv_transfer_params or {}, remote_engine_id="gone", remote_port=free_port())
        with pytest.raises(HandoffError, match="decode role could not load"):
            await asyncio.wait_for(_text(decode.decode(replace(REQUEST, request_id="pd-lost"),
                                                       replace(handoff, kv_transfer_params=params))), 120)
    finally:
        await decode.shutdown()
        await prefill.shutdown()
        os.environ.clear()
        os.environ.update(env_before)
    left = Residue.now().new_since(before)
    assert not left.processes and not left.files, f"left behind: {left}"
