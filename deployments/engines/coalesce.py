"""`engine.stream_interval_ms` for engines that stream every step (vLLM): one chunk per interval per stream.

Each SSE event costs CPU at every hop of the live path (the replica, the ingress, the client), so fewer,
larger events leave more of a small machine to the engine. The first chunk goes at once (TTFT is
untouched), the finishing one too (E2E is untouched); the chunks between are merged until `interval_s`
of wall time has passed since the last one sent. The simulated engine coalesces on its own clock.
"""

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from deployments.engines.base import TokenChunk


def _merge(a: TokenChunk, b: TokenChunk) -> TokenChunk:
    return TokenChunk(text=a.text + b.text, num_tokens=a.num_tokens + b.num_tokens, finished=b.finished,
                      finish_reason=b.finish_reason, prompt_tokens=a.prompt_tokens or b.prompt_tokens)


async def coalesce(chunks: AsyncIterator[TokenChunk], interval_s: float,
                   clock: Callable[[], float] = time.monotonic) -> AsyncIterator[TokenChunk]:
    """`chunks` with those that arrive within `interval_s` of the last one sent merged into the next."""
    held: TokenChunk | None = None
    last: float | None = None
    try:
        async for chunk in chunks:
            held = chunk if held is None else _merge(held, chunk)
            now = clock()
            if last is None or held.finished or now - last >= interval_s:
                yield held
                held, last = None, now
        if held is not None:
            yield held
    finally:  # closed early (the client went away): close the engine's stream now, not at garbage collection
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
