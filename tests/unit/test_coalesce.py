"""`engine.stream_interval_ms` for step-streaming engines: the first and last chunks at once, the rest merged."""

from collections.abc import AsyncIterator

from deployments.engines.base import TokenChunk
from deployments.engines.coalesce import coalesce


async def chunks(times: list[float], now: list[float]) -> AsyncIterator[TokenChunk]:
    """One token per chunk at the given clock times; the last one finishes the request."""
    for i, t in enumerate(times):
        now[0] = t
        yield TokenChunk(f" t{i}", 1, finished=i == len(times) - 1, finish_reason="length" if i == len(times) - 1
                         else None, prompt_tokens=5 if i == 0 else 0)


async def test_chunks_within_an_interval_are_merged_into_the_next_one_sent() -> None:
    now = [0.0]
    times = [0.00, 0.004, 0.008, 0.012, 0.016, 0.020, 0.024, 0.028, 0.030]
    out = [c async for c in coalesce(chunks(times, now), 0.010, clock=lambda: now[0])]
    assert [c.num_tokens for c in out] == [1, 3, 3, 2]              # at 0, 0.012, 0.024, and the finish
    assert "".join(c.text for c in out) == "".join(f" t{i}" for i in range(len(times)))
    assert out[0].prompt_tokens == 5 and out[-1].finished and out[-1].finish_reason == "length"
    assert not any(c.finished for c in out[:-1])


async def test_no_interval_passes_every_chunk() -> None:
    now = [0.0]
    out = [c async for c in coalesce(chunks([0.0, 0.001, 0.002], now), 0.0, clock=lambda: now[0])]
    assert [c.num_tokens for c in out] == [1, 1, 1]


async def test_closing_early_closes_the_engine_stream() -> None:
    sent: list[int] = []
    closed: list[bool] = []

    async def engine() -> AsyncIterator[TokenChunk]:
        try:
            while True:
                sent.append(1)
                yield TokenChunk(" x", 1)
        finally:
            closed.append(True)

    stream = coalesce(engine(), 0.0)
    assert (await anext(stream)).num_tokens == 1
    await stream.aclose()
    assert closed == [True] and len(sent) == 1
