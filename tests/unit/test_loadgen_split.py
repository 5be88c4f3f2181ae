"""The split of a plan over load generator workers is exact: the shares' union is the plan."""

import pytest

from loadgen.plan import Workload, build_plan
from loadgen.split import split_plan
from schema.traffic import SLO, ClosedLoop, FixedLength, LoadConfig, PoissonArrival, TrafficClass


def classes(closed: bool = False) -> list[TrafficClass]:
    own = {"arrival": ClosedLoop(concurrency=5)} if closed else {}
    return [TrafficClass(name="a", share=0.7, slo=SLO(ttft_ms=100), input=FixedLength(value=4),
                         output=FixedLength(value=4)),
            TrafficClass(name="b", share=0.3, slo=SLO(ttft_ms=100), input=FixedLength(value=4),
                         output=FixedLength(value=4), **own)]


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7])
def test_the_shares_union_is_the_one_process_schedule(workers: int) -> None:
    cs = classes()
    load = LoadConfig(arrival=PoissonArrival(rate=500), rates=[300, 900], duration_s=2, warmup_s=0.5, seed=11)
    plan = build_plan(cs, load, Workload(cs))
    shares = split_plan(plan, workers)
    assert len(shares) == workers
    for i, step in enumerate(plan):
        parts = [share[i] for share in shares]
        assert all((p.index, p.duration_s, p.warmup_s, p.class_rates) == (step.index, step.duration_s,
                                                                          step.warmup_s, step.class_rates)
                   for p in parts)
        union = sorted((r for p in parts for r in p.requests), key=lambda r: (r.at_s, r.request_id))
        assert [(r.request_id, r.at_s, r.sla_class) for r in union] == [
            (r.request_id, r.at_s, r.sla_class) for r in sorted(step.requests, key=lambda r: (r.at_s, r.request_id))]
        sizes = [len(p.requests) for p in parts]
        assert max(sizes) - min(sizes) <= 1     # every worker sends every N-th request: the same rate
        for p in parts:                          # each share keeps its own time order
            assert [r.at_s for r in p.requests] == sorted(r.at_s for r in p.requests)


def test_closed_loop_users_are_dealt_out_once() -> None:
    cs = classes(closed=True)
    plan = build_plan(cs, LoadConfig(arrival=PoissonArrival(rate=10), duration_s=1), Workload(cs))
    shares = split_plan(plan, 3)
    users = [u for share in shares for u in share[0].closed[0].user_ids]
    assert sorted(users) == list(range(5)) and plan[0].closed[0].user_ids == (0, 1, 2, 3, 4)
    assert all(share[0].closed[0].concurrency == 5 for share in shares)   # records keep the run's concurrency
