"""The simulator's latencies at the load a configuration saw, on physics known in advance (8B bf16 on H100): a
decode step takes ~9 ms at TP1 and ~6 ms at TP2, so the p90 TPOT is there at a light load; a configuration with
no traffic gets no prediction."""

from controllers.plan.observed import predict_at_load
from controllers.scoreboard import PairStats, Scoreboard
from deployments.resolve import parse_scenario
from schema.deployment import ParallelConfig
from tests.unit.test_repartitioner import SCENARIO


def test_light_load_tpot_is_the_decode_step_and_tp2_is_faster() -> None:
    board = Scoreboard(0.0, {("tp1", "fast"): PairStats("tp1", "fast", request_rate=0.5),
                             ("tp2", "fast"): PairStats("tp2", "fast", request_rate=0.5),
                             ("idle", "fast"): PairStats("idle", "fast")})
    configs = [ParallelConfig(name="tp1", tp=1), ParallelConfig(name="tp2", tp=2), ParallelConfig(name="idle", tp=1)]
    got = predict_at_load(parse_scenario(SCENARIO), board, configs)
    assert set(got) == {("tp1", "fast"), ("tp2", "fast")}
    ttft1, tpot1 = got[("tp1", "fast")]
    ttft2, tpot2 = got[("tp2", "fast")]
    assert tpot1 is not None and tpot2 is not None and ttft1 is not None and ttft2 is not None
    assert 0.006 < tpot1 < 0.013 and 0.004 < tpot2 < tpot1
    assert 0 < ttft2 < ttft1 < 0.2
