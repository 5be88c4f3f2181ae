"""`parallax plan --gpu-failure-rate`: the availability model (controllers/plan/availability.py), the ranking it
changes where the answer is known, and the ranking it leaves exactly as it was without failures."""

import math
from collections.abc import Iterator

import pytest

from controllers.plan.availability import LLAMA3_GPU_FAILURE_RATE, Availability, PoolUp, expected_share, one_failure
from controllers.plan.candidates import Candidate, Knobs, Pool, Prefill, Shape
from controllers.plan.evaluate import COARSE, Capacity, Setup, capacity
from controllers.plan.parallel import Runner, runner
from controllers.plan.result import entry, failure_lines
from controllers.plan.search import Evaluated, PlanOptions, score, search
from deployments.resolve import Resolved, parse_scenario


def scenario(model: str, dtype: str, gpu: str, gpus: int, isl: int, osl: int, slo: dict[str, float]) -> Resolved:
    return parse_scenario({"name": "t", "model": model, "dtype": dtype, "hardware": {"gpu": gpu, "gpus_per_node": gpus},
                           "classes": [{"name": "x", "share": 1.0, "slo": {**slo, "attainment": 0.9},
                                        "input": {"kind": "fixed", "value": isl},
                                        "output": {"kind": "fixed", "value": osl}}],
                           "load": {"arrival": {"kind": "poisson", "rate": 1.0}}}, need_configurations=False)


def test_the_default_failure_rate_is_llama3s_hardware_interruptions_per_gpu_hour() -> None:
    rate = Availability().gpu_failure_rate
    assert rate == LLAMA3_GPU_FAILURE_RATE
    assert rate == pytest.approx(327 / 21_233_664, rel=0.01)   # 0.78 × 419 over 16,384 × 54 × 24 GPU-hours
    assert rate == pytest.approx(1.54e-5, rel=0.01)


def test_a_replica_is_down_its_share_of_a_renewal_cycle() -> None:
    a = Availability(gpu_failure_rate=0.5, restart_s=3600)   # a failure every 2 h of uptime, down 1 h
    assert a.down_share(1) == pytest.approx(1 / 3)            # up 2 h, down 1 h
    assert a.down_share(8) == pytest.approx(4 / 5)            # 8 GPUs: up 15 min, down 1 h
    assert a.failures_per_day(8) == pytest.approx(96)
    assert Availability(0.0).down_share(8) == 0.0


def test_expected_capacity_over_the_states_of_the_replicas() -> None:
    a = Availability(gpu_failure_rate=0.5, restart_s=3600)
    q1, q8 = a.down_share(1), a.down_share(8)
    # one pool, capacity linear in the replicas up: E[u]/r = 1 − q
    assert expected_share([PoolUp(8, 1, 10.0)], a) == pytest.approx(1 - q1)
    assert expected_share([PoolUp(1, 8, 10.0)], a) == pytest.approx(1 - q8)
    # two pools: the deployment carries the lower of the two in every state
    pools = [PoolUp(1, 2, 4.0), PoolUp(2, 1, 6.0)]
    q2 = a.down_share(2)
    by_hand = sum(p1 * p2 * min(4.0 * u1, 6.0 * u2 / 2)
                  for u1, p1 in ((0, q2), (1, 1 - q2))
                  for u2, p2 in ((0, q1 * q1), (1, 2 * q1 * (1 - q1)), (2, (1 - q1) ** 2))) / 4.0
    assert expected_share(pools, a) == pytest.approx(by_hand)
    assert expected_share(pools, Availability(0.0)) == 1.0
    assert one_failure([PoolUp(1, 8, 10.0)], 0) == 1.0
    assert one_failure([PoolUp(8, 1, 10.0)], 0) == pytest.approx(1 / 8)
    assert one_failure(pools, 1) == pytest.approx(1 - 3.0 / 4.0)    # the 6/s pool at 3/s now binds


@pytest.fixture(scope="module")
def pool() -> Iterator[Runner]:
    with runner() as r:
        yield r


def test_no_failures_rank_exactly_as_before(pool: Runner) -> None:
    r = scenario("llama-3.1-8b", "bf16", "h100-sxm", 2, 200, 50, {"ttft_ms": 500})
    quick = PlanOptions(refine_pools=3, seeds=1)
    plain = search(r, quick, pool)
    none = search(r, PlanOptions(refine_pools=3, seeds=1, availability=Availability(0.0)), pool)
    assert [entry(e, i) for i, e in enumerate(none.ranked)] == [entry(e, i) for i, e in enumerate(plain.ranked)]
    assert [(e.candidate, e.max_rate) for e in none.screened] == [(e.candidate, e.max_rate) for e in plain.screened]
    assert all(e.expected_rate == e.max_rate and e.available_share == 1.0 for e in none.ranked)
    assert failure_lines(none.ranked[0], 1) == []


def test_enough_failures_make_8_tp1_beat_tp8_for_a_throughput_bound_class() -> None:
    """Llama-3.1-70B FP8 on H200, 8k-token prompts, an SLO nothing binds but throughput. TP1 keeps ~60 GB of
    its 141 for KV cache, a few 9k-token sequences at a time: TP8 serves more (its capacity C8 > C1, from the
    simulator). A TP8 replica is down 8 times as often as a TP1 one, so the expected capacities cross where
    (1 − q(1))·C1 = (1 − q(8))·C8: with x = R·T, 1/(1 + x)·C1 = 1/(1 + 8x)·C8, x* = (C8 − C1) / (8·C1 − C8)."""
    r = scenario("llama-3.1-70b", "fp8", "h200", 8, 8000, 1000, {"e2e_ms": 600_000})
    s = r.scenario
    setup = Setup.of(r, False)
    knobs = Knobs(s.resolved_kv_dtype, s.engine.max_num_seqs, s.engine.max_num_batched_tokens)

    def evaluated(shape: Shape, replicas: int) -> tuple[Evaluated, Capacity]:
        p = Pool(shape, replicas, ("x",))
        cap = capacity(setup, p, knobs, COARSE, s.engine.seed)
        return Evaluated(Candidate((p,), knobs), [1.0], cap.rate, [cap]), cap

    tp8, c8 = evaluated(Shape(8, 1), 1)
    tp1, c1 = evaluated(Shape(1, 1), 8)
    assert c8.binding == c1.binding == "throughput"
    assert c8.rate > c1.rate > 0

    def first(a: Availability | None) -> str:
        for e in (tp8, tp1):
            e.availability = a
        return min((tp8, tp1), key=lambda e: score(e, "max-rate", 0.0)).candidate.label(1)

    x = (c8.rate - c1.rate) / (8 * c1.rate - c8.rate)     # R·T, in hours
    restart_s = 300.0
    crossing = x / (restart_s / 3600)                      # failures per GPU-hour
    assert first(None) == first(Availability(0.0, restart_s)) == first(Availability()) == "1×TP8"
    assert first(Availability(crossing / 2, restart_s)) == "1×TP8"
    assert first(Availability(crossing * 2, restart_s)) == "8×TP1"
    at = Availability(crossing, restart_s)
    for e in (tp8, tp1):
        e.availability = at
    assert math.isclose(tp8.expected_rate, tp1.expected_rate, rel_tol=1e-9)
    line, = failure_lines(tp8, 1)
    assert line.startswith("1×TP8: a failed GPU takes down one TP8 replica, 100% of its capacity for 300 s")
    assert "a failed GPU takes down one TP1 replica, 12% of its capacity for 300 s" in failure_lines(tp1, 1)[0]


def test_a_disaggregated_pool_fails_with_either_role() -> None:
    """2P(TP1)+1D(TP2): a decode GPU failing takes the whole pool down (its one decode replica), a prefill GPU
    half of it (one of two prefill replicas); the expected capacity counts both roles' down time, as two pools
    of the same rate would."""
    knobs = Knobs("auto", 256, 8192)
    p = Pool(Shape(2, 1), 1, ("x",), Prefill(Shape(1, 1), 2))
    cap = Capacity(10.0, 12.0, 12.0, (), 60.0, 5)
    e = Evaluated(Candidate((p,), knobs), [1.0], cap.rate, [cap])
    assert e.pools_up == [PoolUp(1, 2, 10.0), PoolUp(2, 1, 10.0)]
    e.availability = a = Availability(1e-3, 3600.0)
    assert e.available_share == pytest.approx(expected_share([PoolUp(1, 2, 10.0), PoolUp(2, 1, 10.0)], a))
    assert e.available_share < expected_share([PoolUp(1, 2, 10.0)], a)     # the prefill role fails too
    line, = failure_lines(e, 1)
    assert "one decode TP2 replica, 100% of its capacity for 3600 s, 0.048 times a day" in line
    assert "one prefill TP1 replica, 50% of its capacity for 3600 s, 0.048 times a day" in line
