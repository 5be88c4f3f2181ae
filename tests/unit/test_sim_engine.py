"""SimEngine: the simulated engine in (scaled) real time, against the offline virtual-time run."""

import asyncio
import time

import numpy as np
import pytest

from deployments.catalog.gpus import resolve_gpu
from deployments.catalog.models import resolve_model
from deployments.engines.base import GenerationRequest, TokenChunk
from deployments.engines.sim.engine import SimEngine, count_prompt_tokens, output_words
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.stats import distribution
from deployments.server import MAX_HOP_S, received_at
from schema.deployment import DeploymentSpec, EngineConfig, Hardware, ParallelConfig


def spec(model: str = "llama-3.1-8b", tp: int = 1, pp: int = 1, **engine: object) -> DeploymentSpec:
    return DeploymentSpec(model=model, dtype="fp8", hardware=Hardware(gpu="h100-sxm"),
                          engine=EngineConfig.model_validate(engine),
                          configurations=[ParallelConfig(name="c", tp=tp, pp=pp)])


def engine_for(s: DeploymentSpec) -> SimEngine:
    return SimEngine(s, s.configurations[0], resolve_model(s.model), resolve_gpu(s.hardware.gpu))


def request(rid: str, words: int, max_tokens: int, **kw: object) -> GenerationRequest:
    return GenerationRequest(rid, " ".join(["hi"] * words), max_tokens, "chat", **kw)  # type: ignore[arg-type]


async def collect(engine: SimEngine, req: GenerationRequest) -> list[TokenChunk]:
    return [c async for c in engine.generate(req)]


def test_prompt_tokens_are_whitespace_separated_words() -> None:
    assert count_prompt_tokens("a  b\tc\nd ") == 4
    assert count_prompt_tokens("") == 0


def test_output_text_is_one_word_per_token_and_deterministic() -> None:
    text = output_words(7, "r1", 0, 12)
    assert len(text.split()) == 12
    assert text == output_words(7, "r1", 0, 5) + output_words(7, "r1", 5, 12)
    assert text != output_words(8, "r1", 0, 12)


@pytest.mark.parametrize(("model", "tp", "pp"), [("llama-3.1-8b", 1, 1), ("llama-3.1-70b", 4, 2)])
async def test_stream_yields_every_token_then_finishes(model: str, tp: int, pp: int) -> None:
    eng = engine_for(spec(model, tp, pp, time_scale=0.01))   # 100x faster than real time: tokens pile up
    await eng.start()
    try:
        chunks = await collect(eng, request("a", 30, 17))
    finally:
        await eng.shutdown()
    assert sum(c.num_tokens for c in chunks) == 17
    assert chunks[0].prompt_tokens == 30 and all(c.prompt_tokens == 0 for c in chunks[1:])
    assert chunks[-1].finished and chunks[-1].finish_reason == "length"
    assert not any(c.finished for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == output_words(0, "a", 0, 17)


async def test_stream_interval_coalesces_tokens() -> None:
    # 8B decode steps take ~6-7 simulated ms, 13 wall ms at time_scale 2: each token comes alone; a
    # 60 wall-ms interval (30 simulated ms) gathers 4-5
    async def chunks(interval_ms: float) -> list[TokenChunk]:
        eng = engine_for(spec(time_scale=2.0, stream_interval_ms=interval_ms))
        await eng.start()
        try:
            return await collect(eng, request("a", 10, 40))
        finally:
            await eng.shutdown()

    plain, coalesced = await chunks(0), await chunks(60)
    assert sum(c.num_tokens for c in plain) == sum(c.num_tokens for c in coalesced) == 40
    assert len(coalesced) <= 12 < len(plain)
    assert max(c.num_tokens for c in coalesced) >= 4
    assert "".join(c.text for c in coalesced) == "".join(c.text for c in plain)


async def test_abort_ends_the_stream_and_frees_the_kv_cache() -> None:
    eng = engine_for(spec(time_scale=0.05))
    await eng.start()
    try:
        it = eng.generate(request("a", 100, 10_000))
        first = await it.__anext__()
        assert first.num_tokens >= 1
        st = eng.stats()
        assert st.running == 1 and st.kv_cache_usage > 0
        await eng.abort("a")
        rest = [c async for c in it]
        assert rest[-1].finished and rest[-1].finish_reason == "abort"
        st = eng.stats()
        assert st.running == 0 and st.waiting == 0 and st.kv_cache_usage == 0
    finally:
        await eng.shutdown()


async def test_too_long_request_is_refused_with_a_clear_message() -> None:
    eng = engine_for(spec(time_scale=0.01, max_model_len=512))
    await eng.start()
    try:
        with pytest.raises(ValueError, match="512-token limit"):
            eng.generate(request("a", 500, 100))
        with pytest.raises(ValueError, match="at least one token"):
            eng.generate(request("b", 0, 5))
        chunks = await collect(eng, GenerationRequest("c", "ignored", 3, "chat", prompt_token_ids=[1] * 40))
        assert chunks[0].prompt_tokens == 40
    finally:
        await eng.shutdown()


async def test_stats_show_queueing_and_cancelled_clients_free_everything() -> None:
    eng = engine_for(spec(time_scale=0.2, max_num_seqs=4))
    await eng.start()
    try:
        tasks = [asyncio.create_task(collect(eng, request(str(i), 50, 200))) for i in range(10)]
        await asyncio.sleep(0.02)
        st = eng.stats()
        assert st.running == 4 and st.waiting == 6 and st.kv_cache_usage > 0
        for t in tasks:
            t.cancel()                 # a client that goes away aborts its request
        await asyncio.gather(*tasks, return_exceptions=True)
        st = eng.stats()
        assert st.running == 0 and st.waiting == 0 and st.kv_cache_usage == 0
    finally:
        await eng.shutdown()


async def test_realtime_matches_offline_percentiles() -> None:
    """The same workload, offline (virtual time) and through the real-time engine, gives the same
    TTFT and TPOT percentiles (±2%); time_scale stretches wall time so timer jitter is small."""
    s = spec("llama-3.1-70b", tp=8, time_scale=3.0)
    rng = np.random.default_rng(3)
    arrivals = np.sort(rng.uniform(0.05, 0.35, 24))
    lengths = rng.integers(800, 2500, 24)
    reqs = [RequestSpec(int(n), 24, float(a)) for n, a in zip(lengths, arrivals, strict=True)]
    par = s.configurations[0]
    factory = ReplicaFactory(resolve_model(s.model), resolve_gpu("h100-sxm"), s.dtype, s.resolved_kv_dtype,
                             par.tp, par.pp, s.engine)
    offline = run_offline(factory, reqs).records

    eng = engine_for(s)
    simulated: dict[str, list[float]] = {}
    eng.core.on_finish = lambda seq, t: simulated.__setitem__(seq.request_id, seq.token_times)
    await eng.start()
    ttft: list[float] = []
    tpot: list[float] = []

    async def client(i: int, r: RequestSpec) -> None:
        at = eng.wall_time(r.arrival)
        # join while the engine runs, a little ahead, stamped with the exact arrival time (as a server
        # stamps receipt), so a busy CI machine cannot shift the schedule
        await asyncio.sleep(max(0.0, at - time.monotonic() - 0.05))
        times = []
        async for c in eng.generate(request(str(i), r.prompt_len, r.output_len, arrival_time=at)):
            times.extend([time.monotonic()] * c.num_tokens)
        ttft.append((times[0] - at) / s.engine.time_scale)
        tpot.append((times[-1] - times[0]) / (len(times) - 1) / s.engine.time_scale)

    try:
        await asyncio.gather(*(client(i, r) for i, r in enumerate(reqs)))
    finally:
        await eng.shutdown()
    for rec in offline:   # the simulated schedule itself is the offline one
        assert simulated[rec.request_id] == pytest.approx(rec.token_times, abs=1e-9)
    for name, live, off in (("ttft", ttft, [r.ttft for r in offline]), ("tpot", tpot, [r.tpot for r in offline])):
        a, b = distribution(live), distribution(off)
        for q in ("p50", "p90", "p99"):
            assert a[q] == pytest.approx(b[q], rel=0.02), f"{name} {q}: real-time {a[q]:.2f} ms, offline {b[q]:.2f} ms"


def test_the_engine_clock_starts_at_the_ingress_receipt_within_bounds() -> None:
    # 30 ms on the way from the ingress: the engine counts them; a clock ahead of ours counts as 0 s;
    # a hop longer than MAX_HOP_S (clock skew between nodes) is cut to MAX_HOP_S.
    assert received_at(99.97, 100.0, 5.0) == pytest.approx((99.97, 4.97))
    assert received_at(100.2, 100.0, 5.0) == (100.0, 5.0)
    assert received_at(90.0, 100.0, 5.0) == (100.0 - MAX_HOP_S, 5.0 - MAX_HOP_S)


async def test_a_back_dated_arrival_is_served_from_that_time() -> None:
    # The server hands the engine the ingress's receipt: the first token comes one prefill after it,
    # not one prefill after the (later) moment the replica got the request.
    s = spec("llama-3.1-70b", 4, 1, time_scale=1.0)
    eng = engine_for(s)
    await eng.start()
    hop = 0.05
    await asyncio.sleep(2 * hop)   # the engine was running when the ingress received the request
    try:
        received = time.monotonic() - hop
        stream = eng.generate(request("late", 2000, 2, arrival_time=received))
        first = await anext(aiter(stream))
        ttft = time.monotonic() - received
        async for _ in stream:
            pass
    finally:
        await eng.shutdown()
    factory = ReplicaFactory(resolve_model(s.model), resolve_gpu("h100-sxm"), s.dtype, s.resolved_kv_dtype, 4, 1,
                             s.engine)
    offline = run_offline(factory, [RequestSpec(2000, 2)]).records[0].ttft
    assert first.num_tokens == 1
    assert offline > hop and ttft == pytest.approx(offline, abs=0.02)


async def test_health_follows_the_engines_clock() -> None:
    """Serve's health check asks the engine (LLMServer.check_health): not started, or a step of the core
    failed, and the replica is unhealthy."""
    eng = engine_for(spec(time_scale=0.01))
    with pytest.raises(RuntimeError, match="not running"):
        await eng.check_health()
    await eng.start()
    await eng.check_health()

    def failing_step(now: float) -> list[object]:
        raise RuntimeError("a step failed")

    eng.core.run_until = failing_step  # type: ignore[method-assign]  # a fault injected into the core
    try:
        with pytest.raises(RuntimeError, match="the simulated engine stopped"):
            await collect(eng, request("a", 10, 5))
        with pytest.raises(RuntimeError, match="clock stopped: RuntimeError\\('a step failed'\\)"):
            await eng.check_health()
    finally:
        await eng.shutdown()
