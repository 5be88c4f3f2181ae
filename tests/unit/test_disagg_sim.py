"""The simulator's disaggregation: prefill replicas hand each prompt's KV cache to decode replicas. Event-core
mechanics (KV held on both sides until the copy is done, decode admission, aborts), what a handoff costs from
first principles, the offline run's records, and the fluid estimate against the simulator."""

import math

import pytest

from deployments.catalog.gpus import resolve_gpu
from deployments.catalog.models import resolve_model
from deployments.engines.sim.block_manager import BlockManager
from deployments.engines.sim.core import EngineCore
from deployments.engines.sim.disagg import DisaggregatedReplicas
from deployments.engines.sim.disagg_steady_state import estimate
from deployments.engines.sim.kv_transfer import KvTransfer
from deployments.engines.sim.offline import RequestSpec
from deployments.engines.sim.perf_model import TERMS
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.scheduler import Scheduler
from deployments.engines.sim.sequence import Sequence, Status
from deployments.engines.sim.stats import summarize
from deployments.engines.sim.work import BatchShape
from deployments.engines.sim.workload import fixed_workload
from deployments.resolve import parse_scenario
from schema.dtypes import Dtype
from tests.unit.sim_costs import LinearCost

M8, M70 = resolve_model("llama-3.1-8b"), resolve_model("llama-3.1-70b")
H100, MI300X = resolve_gpu("h100-sxm"), resolve_gpu("mi300x")


def core(blocks: int = 1000, max_num_seqs: int = 64, hold_kv: bool = False) -> EngineCore:
    return EngineCore(Scheduler(BlockManager(blocks, 16), max_num_seqs, 8192, hold_kv=hold_kv), LinearCost())


def factory(role: str, tp: int = 1, **engine: object) -> ReplicaFactory:
    from schema.deployment import EngineConfig
    return ReplicaFactory(M8, H100, Dtype.bf16, Dtype.bf16, tp, 1, EngineConfig.model_validate(engine),
                          role=role)  # type: ignore[arg-type]


def pair(prefill: int = 1, decode: int = 1, **engine: object) -> DisaggregatedReplicas:
    return DisaggregatedReplicas(factory("prefill", **engine), factory("decode", **engine), prefill, decode)


# --- the event core -----------------------------------------------------------------------------------------
def test_the_prefill_replica_holds_the_kv_until_the_decode_replica_has_it() -> None:
    pre, dec = core(hold_kv=True), core()
    received: list[tuple[Sequence, float]] = []
    dec.on_received = lambda s, t: received.append((s, t))
    p = Sequence("a", 100, 1)
    pre.submit(p, 0.0)
    pre.run_until(1.0)
    assert p.status == Status.FINISHED and p.first_token_time == pytest.approx(0.02)   # 10 ms + 100 × 0.1 ms
    held = pre.scheduler.blocks.num_blocks - pre.scheduler.blocks.free
    assert held == 7                                   # ⌈100 / 16⌉ blocks, kept after the request finished
    d = Sequence("a", 100, 5, arrival=0.0)
    dec.submit_handoff(d, 1.0, transfer_s=0.5)
    dec.run_until(1.25)
    assert d.status == Status.RECEIVING and dec.scheduler.blocks.free == 1000 - 7 and not received
    assert dec.term_seconds["kv_transfer"] == 0.5
    dec.run_until(1.5)
    assert received == [(d, 1.5)] and d.first_token_time == 1.5 and d.num_output == 1
    pre.release_kv(p)
    assert pre.scheduler.blocks.free == pre.scheduler.blocks.num_blocks
    dec.run_until(10.0)
    assert d.status == Status.FINISHED and len(d.token_times) == 5 and d.token_times[1] > 1.5
    assert dec.scheduler.blocks.free == 1000


def test_a_decode_replica_admits_handoffs_first_come_first_served_as_blocks_free() -> None:
    dec = core(blocks=10)                  # 160 tokens: one 100-token prompt and its 50 outputs at a time
    a, b = Sequence("a", 100, 50), Sequence("b", 100, 50)
    dec.submit_handoff(a, 0.0, 0.1)
    dec.submit_handoff(b, 0.0, 0.1)
    dec.run_until(math.inf)
    assert a.finish_time is not None and b.first_token_time is not None
    assert b.first_token_time == pytest.approx(a.finish_time + 0.1)     # b's copy waited for a's blocks
    assert a.preemptions == b.preemptions == 0


def test_sequences_being_received_count_against_max_num_seqs() -> None:
    dec = core(max_num_seqs=1)
    a, b = Sequence("a", 10, 3), Sequence("b", 10, 3)
    dec.submit_handoff(a, 0.0, 0.05)
    dec.submit_handoff(b, 0.0, 0.05)
    dec.run_until(0.01)
    assert a.status == Status.RECEIVING and b.status == Status.PENDING
    dec.run_until(math.inf)
    assert a.finish_time is not None and b.first_token_time == pytest.approx(a.finish_time + 0.05)


def test_an_abort_during_a_copy_frees_its_blocks_and_the_next_handoff_goes_on() -> None:
    dec = core(blocks=10)
    a, b = Sequence("a", 100, 50), Sequence("b", 100, 50)
    dec.submit_handoff(a, 0.0, 1.0)
    dec.submit_handoff(b, 0.0, 1.0)
    dec.run_until(0.5)
    assert a.status == Status.RECEIVING and b.status == Status.PENDING     # no room for b's 7 blocks beside a's
    dec.abort(a)
    assert a.status == Status.ABORTED and b.status == Status.RECEIVING     # a's blocks let b in at once
    assert dec.scheduler.receiving == 1 and dec.scheduler.blocks.free == 10 - 7
    dec.abort(b)
    assert dec.scheduler.blocks.free == 10 and dec.load == 0 and dec.next_event_time() == math.inf
    c = Sequence("c", 100, 5)
    dec.submit_handoff(c, 0.6, 1.0)
    dec.run_until(math.inf)
    assert c.first_token_time == pytest.approx(1.6) and c.status == Status.FINISHED


# --- the offline run ----------------------------------------------------------------------------------------
def test_a_lone_request_waits_for_its_prefill_and_its_handoff_then_decodes_on_the_decode_replica() -> None:
    d = pair()
    rec = d.run([RequestSpec(1000, 10)]).records[0]
    prefill = d.prefill.cost_model.step(BatchShape(prefill_tokens=1000, prefill_seqs=1,
                                                   prefill_attn_pairs=1000 * 1001 / 2)).latency_s
    transfer = d.links[0][0].seconds(1000)
    assert rec.first_token == pytest.approx(prefill + transfer, rel=1e-12)
    assert rec.kv_transfer_s == transfer and transfer > 0
    step = d.decode.cost_model.step(BatchShape(decode_seqs=1, decode_context=1001)).latency_s
    assert rec.token_times[1] - rec.first_token == pytest.approx(step, rel=1e-12)
    assert (rec.prefill_replica, rec.replica) == (0, 1) and len(rec.token_times) == 10


def test_every_request_finishes_through_a_crowded_decode_pool() -> None:
    d = pair(prefill=2, decode=1, gpu_memory_utilization=0.3)    # a small KV cache: decode preempts, recomputes
    reqs = fixed_workload(300, 2000, 300, rate=40.0, seed=3)
    res = d.run(reqs)
    assert len(res.records) == 300 and all(len(r.token_times) == 300 for r in res.records)
    assert sum(r.preemptions for r in res.records) > 0
    assert {r.prefill_replica for r in res.records} == {0, 1} and {r.replica for r in res.records} == {2}
    assert all(r.arrival < r.first_token < r.finish for r in res.records)
    closed = d.run(fixed_workload(60, 500, 20), concurrency=4).records
    events = sorted([(r.arrival, 1) for r in closed] + [(r.finish, -1) for r in closed])
    live = [sum(e for _, e in events[: i + 1]) for i in range(len(events))]
    assert max(live) == 4


def test_a_one_token_request_ends_at_its_prefill_replica() -> None:
    rec = pair().run([RequestSpec(500, 1)]).records[0]
    assert rec.replica == rec.prefill_replica == 0 and rec.kv_transfer_s == 0 and rec.first_token == rec.finish


def test_the_handoff_is_a_cost_term_of_the_breakdown() -> None:
    res = pair(decode=2).run(fixed_workload(50, 3000, 20, rate=5.0))
    assert "kv_transfer" in TERMS
    total = sum(c.term_seconds.get("kv_transfer", 0.0) for c in res.cores)
    assert total == pytest.approx(sum(r.kv_transfer_s for r in res.records))
    assert summarize(res)["breakdown"]["kv_transfer"] > 0


# --- what a handoff costs -----------------------------------------------------------------------------------
def test_kv_bytes_per_token_are_first_principles() -> None:
    t = KvTransfer.between(M70, H100, Dtype.fp8, (4, 1), (4, 1), cross_node=False)
    assert t.bytes_per_token == 2 * 80 * 8 * 128 * 1      # K and V × layers × KV heads × head dim × 1 byte
    assert 4000 * t.bytes_per_token / 2**20 == pytest.approx(625)        # ~640 MB for a 4000-token prompt


def test_a_transfer_costs_more_the_longer_the_prompt() -> None:
    t = KvTransfer.between(M70, H100, Dtype.fp8, (2, 1), (4, 1), cross_node=False)
    costs = [t.seconds(n) for n in (0, 1000, 2000, 4000, 8000)]
    assert costs == sorted(costs) and len(set(costs)) == 5
    assert costs[0] == t.latency_s and costs[2] - costs[1] == pytest.approx(costs[1] - costs[0])   # linear
    recs = pair().run([RequestSpec(n, 2, arrival=10.0 * i) for i, n in enumerate((500, 1000, 4000))]).records
    assert recs[0].kv_transfer_s < recs[1].kv_transfer_s < recs[2].kv_transfer_s


def test_across_nodes_the_kv_cache_goes_through_the_nics() -> None:
    intra = KvTransfer.between(M70, H100, Dtype.fp8, (4, 1), (4, 1), cross_node=False)
    inter = KvTransfer.between(M70, H100, Dtype.fp8, (4, 1), (4, 1), cross_node=True)
    assert inter.per_token_s / intra.per_token_s == pytest.approx((900 / 2) / 50)   # NVLink one way / 400 Gb/s
    # In a run: the decode replica on the other node delivers the first token later, by the difference.
    base = {"name": "s", "model": "llama-3.1-8b", "dtype": "bf16", "configurations": [
        {"name": "pd", "disagg": {"prefill": {"tp": 1}, "decode": {"tp": 1}}}],
        "classes": [{"name": "c", "share": 1.0, "slo": {"ttft_ms": 1000}, "input": {"kind": "fixed", "value": 4000},
                     "output": {"kind": "fixed", "value": 4}}]}
    first = []
    for per_node in (2, 1):
        r = parse_scenario({**base, "hardware": {"gpu": "h100-sxm", "gpus_per_node": per_node, "nodes": 2}})
        d = DisaggregatedReplicas.for_deployment(r.scenario, r.scenario.configurations[0], r.model, r.gpu)
        first.append(d.run([RequestSpec(4000, 4)]).records[0])
    assert first[1].ttft - first[0].ttft == pytest.approx(first[1].kv_transfer_s - first[0].kv_transfer_s)
    assert first[1].kv_transfer_s > 5 * first[0].kv_transfer_s


def test_on_a_mesh_a_gpu_copying_to_several_peers_drives_several_links() -> None:
    # TP1 → TP4: the prefill GPU holds all 8 KV heads and copies 2 to each of 4 decode GPUs.
    def per_token(gpu: object, decode_tp: int) -> float:
        return KvTransfer.between(M70, gpu, Dtype.fp8, (1, 1), (decode_tp, 1), cross_node=False).per_token_s  # type: ignore[arg-type]
    assert per_token(MI300X, 1) / per_token(MI300X, 4) == pytest.approx(4)   # one Infinity Fabric link each
    assert per_token(H100, 1) == pytest.approx(per_token(H100, 4))           # one NVLink port either way


# --- the fluid estimate -------------------------------------------------------------------------------------
def test_the_fluid_estimate_rate_matches_the_two_pools() -> None:
    one = estimate(pair(1, 1), 4000, 100)
    more = estimate(pair(3, 1), 4000, 100)
    assert one.limit == "prefill" and one.rate == one.prefill_rate < one.decode_rate
    assert more.prefill_rate == pytest.approx(3 * one.prefill_rate) and more.decode_rate == one.decode_rate
    held = estimate(pair(1, 1), 4000, 100, tpot_s=0.015)
    assert held.tpot_s <= 0.015 < one.tpot_s and held.decode_running < one.decode_running
    r = one.rate_within(1.0)
    assert 0 < r < one.rate and one.ttft_at(r) == pytest.approx(1.0)
    assert one.rate_within(one.prefill_s) == 0.0


@pytest.mark.parametrize(("p", "d", "isl", "osl"), [(1, 2, 4000, 100), (2, 1, 200, 500)],
                         ids=["prefill-bound", "decode-bound"])
def test_the_fluid_estimate_is_within_15_percent_of_the_simulator_at_saturation(p: int, d: int, isl: int,
                                                                                osl: int) -> None:
    replicas = pair(p, d)
    est = estimate(replicas, isl, osl)
    n = 1200
    finish = sorted(r.finish for r in replicas.run(fixed_workload(n, isl, osl)).records)
    simulated = (n // 2) / (finish[3 * n // 4] - finish[n // 4])
    assert est.rate == pytest.approx(simulated, rel=0.15)
    assert est.limit == ("prefill" if isl > osl else "decode")
