"""The simulated engine's scheduler, KV blocks, PP pipeline and offline runner."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.engines.sim.block_manager import BlockManager
from deployments.engines.sim.core import EngineCore
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.scheduler import Scheduler
from deployments.engines.sim.sequence import Sequence
from tests.unit.sim_costs import LinearCost


def make_core(cost: LinearCost, *, blocks: int = 10_000, block_size: int = 16, max_num_seqs: int = 256,
              budget: int = 2048, pp: int = 1) -> EngineCore:
    sched = Scheduler(BlockManager(blocks, block_size), max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                      microbatches=pp)
    return EngineCore(sched, cost)


def run(core: EngineCore, specs: list[tuple[float, int, int]]) -> list[Sequence]:
    seqs = [Sequence(str(i), p, o) for i, (_, p, o) in enumerate(specs)]
    for s, (t, _, _) in zip(seqs, specs, strict=True):
        core.submit(s, t)
    core.run_until(math.inf)
    return seqs


def test_single_request_timeline_is_exact() -> None:
    cost = LinearCost(step_s=0.01, token_s=0.001)
    (seq,) = run(make_core(cost), [(0.0, 10, 3)])
    # prefill of 10 tokens: 0.01 + 0.010; then two decodes of 0.011 each
    assert seq.first_token_time == pytest.approx(0.020)
    assert seq.token_times == pytest.approx([0.020, 0.031, 0.042])
    assert seq.finish_time == pytest.approx(0.042)
    assert [s.prefill_tokens for s in cost.shapes] == [10, 0, 0]
    assert [s.decode_context for s in cost.shapes] == [0, 11, 12]   # KV each decode token reads, itself included
    assert cost.shapes[0].prefill_attn_pairs == pytest.approx(10 * 11 / 2)


def test_chunked_prefill_respects_token_budget() -> None:
    cost = LinearCost()
    seqs = run(make_core(cost, budget=256), [(0.0, 1000, 4), (0.0, 300, 4)])
    assert all(s.num_tokens <= 256 for s in cost.shapes)
    # the first prompt takes four chunks (256, 256, 256, 232); its first token follows the last one
    assert [s.prefill_tokens for s in cost.shapes[:4]] == [256, 256, 256, 256]
    assert cost.shapes[0].prefill_seqs == 1 and cost.shapes[3].prefill_seqs == 2   # 232 + 24 of the second
    assert seqs[0].first_token_time == pytest.approx(sum(0.010 + 0.0001 * 256 for _ in range(4)))
    # a later chunk attends to the earlier ones: pairs = new · (context + (new + 1) / 2)
    assert cost.shapes[1].prefill_attn_pairs == pytest.approx(256 * (256 + 257 / 2))
    assert all(s.num_output == 4 for s in seqs)


def test_decodes_go_first_and_prefill_takes_the_rest_of_the_budget() -> None:
    cost = LinearCost()
    core = make_core(cost, budget=64)
    decoders = [Sequence(f"d{i}", 8, 500) for i in range(10)]
    for s in decoders:
        core.submit(s, 0.0)
    core.run_until(0.5)                     # all ten are decoding by now
    assert all(s.num_output > 1 for s in decoders)
    big = Sequence("big", 500, 2)
    core.submit(big, core.now)
    n = len(cost.shapes)
    core.run_until(core.now + 0.2)
    mixed = [s for s in cost.shapes[n:] if s.prefill_tokens]
    assert mixed, "the long prompt was never scheduled"
    assert all(s.decode_seqs == 10 for s in mixed)            # no running decode is starved by the prefill
    assert [s.prefill_tokens for s in mixed] == [54] * 9 + [14]  # chunks fill what the decodes leave
    assert big.num_output >= 1


def test_max_num_seqs_caps_the_running_batch() -> None:
    cost = LinearCost()
    seqs = run(make_core(cost, max_num_seqs=4), [(0.0, 20, 10)] * 10)
    assert max(s.num_seqs for s in cost.shapes) == 4
    firsts = sorted(s.first_token_time for s in seqs if s.first_token_time is not None)
    assert firsts[4] >= firsts[3] + 9 * 0.010   # the fifth starts only after one of the first four finishes


def test_preemption_frees_newest_and_recomputes_later() -> None:
    cost = LinearCost()
    # 8 blocks of 16 tokens = 128 KV tokens; two requests of 16 + 100 tokens cannot both finish together
    core = make_core(cost, blocks=8, block_size=16)
    a, b = run(core, [(0.0, 16, 100), (0.0, 16, 100)])
    assert a.preemptions == 0 and b.preemptions >= 1      # the newest one is preempted
    assert core.scheduler.num_preemptions == a.preemptions + b.preemptions
    assert a.num_output == b.num_output == 100             # both still complete
    assert b.finish_time is not None and a.finish_time is not None and b.finish_time > a.finish_time
    # recompute: b's prompt and the tokens it had generated are prefilled again after the preemption
    total_prefill = sum(s.prefill_tokens for s in cost.shapes)
    assert total_prefill > 32
    assert max(s.prefill_tokens for s in cost.shapes[1:]) > 16
    assert core.scheduler.blocks.free == 8                 # every block is returned


def test_kv_usage_never_exceeds_capacity_under_pressure() -> None:
    cost = LinearCost()
    core = make_core(cost, blocks=40, block_size=16, budget=512)
    seqs = [Sequence(str(i), 60, 80) for i in range(12)]
    for i, s in enumerate(seqs):
        core.submit(s, i * 0.005)
    while core.next_event_time() < math.inf:
        core.run_until(core.next_event_time())
        assert 0 <= core.scheduler.blocks.free <= 40
        used = sum(s.num_blocks for s in core.scheduler.running)
        assert used == 40 - core.scheduler.blocks.free
    assert all(s.num_output == 80 for s in seqs)
    assert sum(s.preemptions for s in seqs) > 0


def test_request_larger_than_the_kv_cache_is_refused() -> None:
    core = make_core(LinearCost(), blocks=4, block_size=16)
    with pytest.raises(ValueError, match="64-token limit"):
        core.submit(Sequence("x", 60, 10), 0.0)


def test_pp_micro_batches_raise_throughput_not_single_request_speed() -> None:
    def offline(pp: int, n: int) -> tuple[float, float]:
        res = run_offline(lambda: make_core(LinearCost(stages=pp), pp=pp), [RequestSpec(50, 20)] * n)
        return res.makespan, res.records[0].ttft

    one_pp1, ttft_pp1 = offline(1, 1)
    one_pp4, ttft_pp4 = offline(4, 1)
    assert one_pp4 == pytest.approx(4 * one_pp1)     # one request crosses all four stages every step
    assert ttft_pp4 == pytest.approx(4 * ttft_pp1)
    # 64 requests on the same 4-stage model: without micro-batches in flight three stages idle while
    # one works; with them, four quarter-size micro-batches overlap and throughput nearly quadruples
    def makespan(pp: int) -> float:
        cost = LinearCost(step_s=0.001, token_s=0.001, stages=4)
        return run_offline(lambda: make_core(cost, pp=pp), [RequestSpec(10, 100)] * 64).makespan

    assert makespan(4) < 0.35 * makespan(1)


def test_pp_keeps_a_decoding_sequence_in_one_micro_batch() -> None:
    cost = LinearCost(stages=2)
    core = make_core(cost, pp=2)
    seqs = [Sequence(str(i), 30, 40) for i in range(6)]
    for s in seqs:
        core.submit(s, 0.0)
    max_inflight = 0
    while core.next_event_time() < math.inf:
        core.run_until(core.next_event_time())
        in_flight = list(core._in_flight)
        max_inflight = max(max_inflight, len(in_flight))
        ids = [id(s) for mb in in_flight for s in mb.batch.decodes + mb.batch.sampled]
        assert len(ids) == len(set(ids))   # one token at a time: nobody samples twice in the pipeline
    assert max_inflight == 2
    assert all(s.num_output == 40 for s in seqs)
    for s in seqs:   # a token per full pass, never faster
        gaps = [b - a for a, b in zip(s.token_times, s.token_times[1:], strict=False)]
        assert min(gaps) >= 2 * 0.010


def test_pp_micro_batches_share_the_token_budget_and_a_prompt_streams_through_the_stages() -> None:
    """PP4, budget 400: each micro-batch takes at most 100 tokens; the next chunk of a long prompt enters
    the pipeline as soon as the previous one has left the first stage (not once it has left the last), so a
    1000-token prompt's first token comes after 10 + 3 stage intervals, not 10 full passes."""
    cost = LinearCost(step_s=0.001, token_s=0.0001, stages=4)
    core = make_core(cost, budget=400, pp=4)
    (seq,) = run(core, [(0.0, 1000, 2)])
    assert [s.prefill_tokens for s in cost.shapes[:10]] == [100] * 10
    stage = 0.001 + 0.0001 * 100
    assert seq.first_token_time == pytest.approx((10 + 3) * stage)


def test_a_pp_replica_under_mixed_load_approaches_data_parallel_replicas() -> None:
    """Long prompts arriving among short requests, near saturation: one 4-stage pipeline (each GPU holding a
    quarter of the layers, so 4× one GPU's KV blocks) keeps up with the traffic about as well as 4
    data-parallel copies of the whole model (the same work per token): micro-batches of equal cost keep
    every stage busy. When a prompt's next chunk waited for the previous one to leave the last stage and a
    micro-batch full of decodes admitted no prompt, the queue grew (makespan ×1.3 here)."""
    cost = LinearCost(step_s=0.0005, token_s=0.0001, stages=4)
    reqs = [RequestSpec(2000 if i % 5 == 0 else 50, 100 if i % 5 == 0 else 30, arrival=0.05 * i) for i in range(200)]
    pp4 = run_offline(lambda: make_core(cost, budget=2048, pp=4, blocks=40_000), reqs)
    dp4 = run_offline(lambda: make_core(cost, budget=2048), reqs, replicas=4)
    assert pp4.makespan < 1.1 * dp4.makespan


def test_data_parallel_replicas_share_the_load() -> None:
    reqs = [RequestSpec(100, 50)] * 40
    one = run_offline(lambda: make_core(LinearCost(), max_num_seqs=8), reqs)
    two = run_offline(lambda: make_core(LinearCost(), max_num_seqs=8), reqs, replicas=2)
    assert sorted({r.replica for r in two.records}) == [0, 1]
    assert sum(r.replica for r in two.records) == 20                 # least-loaded dispatch balances
    assert two.makespan < 0.6 * one.makespan


def test_closed_loop_keeps_concurrency_requests_in_the_system() -> None:
    res = run_offline(lambda: make_core(LinearCost()), [RequestSpec(10, 5)] * 12, concurrency=3)
    arrivals = sorted(r.arrival for r in res.records)
    assert arrivals[:3] == [0.0, 0.0, 0.0]
    for r in res.records:   # never more than three requests in flight at once
        live = sum(1 for o in res.records if o.arrival <= r.arrival < o.finish)
        assert live <= 3
    # each of the next three requests arrives the moment one of the first three finishes
    assert sorted(r.finish for r in res.records)[:3] == sorted(r.arrival for r in res.records)[3:6]


def test_same_workload_same_result() -> None:
    reqs = [RequestSpec(30 + 7 * i % 50, 5 + i % 9, arrival=0.003 * i) for i in range(60)]
    a = run_offline(lambda: make_core(LinearCost(), blocks=30), reqs)
    b = run_offline(lambda: make_core(LinearCost(), blocks=30), reqs)
    assert [r.token_times for r in a.records] == [r.token_times for r in b.records]
    assert sum(r.preemptions for r in a.records) > 0


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 60), st.floats(0, 0.5)), min_size=1, max_size=25),
    blocks=st.integers(24, 200), budget=st.integers(16, 512), max_num_seqs=st.integers(1, 16), pp=st.integers(1, 3),
)
def test_scheduler_invariants_on_random_workloads(lengths: list[tuple[int, int, float]], blocks: int, budget: int,
                                                  max_num_seqs: int, pp: int) -> None:
    cost = LinearCost(stages=pp)
    core = make_core(cost, blocks=blocks, block_size=16, budget=budget, max_num_seqs=max_num_seqs, pp=pp)
    seqs = [Sequence(str(i), p, o) for i, (p, o, _) in enumerate(lengths)]
    submitted = []
    for s, (_, _, t) in zip(seqs, lengths, strict=True):
        if s.prompt_len + s.max_tokens <= core.max_model_len:   # larger ones are refused (tested above)
            core.submit(s, t)
            submitted.append(s)
    while core.next_event_time() < math.inf:
        core.run_until(core.next_event_time())
        sched = core.scheduler
        assert sum(s.num_blocks for s in sched.running) == blocks - sched.blocks.free
        assert sched.num_running <= max_num_seqs
    assert all(s.num_tokens <= budget for s in cost.shapes)
    assert core.scheduler.blocks.free == blocks
    for s in submitted:
        assert s.num_output == s.max_tokens == len(s.token_times)
        assert s.first_token_time == s.token_times[0] > s.arrival
        assert all(b > a for a, b in zip(s.token_times, s.token_times[1:], strict=False))


def test_a_micro_batch_with_its_share_of_decodes_still_takes_prompt_tokens() -> None:
    """PP2, 11 decoding sequences (a micro-batch takes at most ⌈12 / 2⌉ = 6 of them) and a long prompt: every
    micro-batch until the prompt's last chunk fills its half of the token budget with a chunk of it, also
    the ones holding their full share of decodes."""
    cost = LinearCost(stages=2)
    core = make_core(cost, budget=256, pp=2)
    decoders = [Sequence(f"d{i}", 8, 400) for i in range(11)]
    for s in decoders:
        core.submit(s, 0.0)
    core.run_until(0.5)
    assert all(s.num_output > 2 for s in decoders)
    n = len(cost.shapes)
    big = Sequence("big", 1200, 2)
    core.submit(big, core.now)
    while big.first_token_time is None:
        core.run_until(core.next_event_time())
    during = cost.shapes[n:]
    chunks = [s for s in during if s.prefill_tokens]
    assert sum(s.prefill_tokens for s in chunks) == 1200
    before_last = during[:during.index(chunks[-1])]
    assert {s.decode_seqs for s in before_last} == {5, 6}
    assert all(s.num_tokens == 128 for s in before_last)
