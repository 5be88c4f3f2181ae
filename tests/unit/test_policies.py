"""Routing policies: choice, hysteresis, dwell, exploration, draining, observe."""

import pytest

from controllers.policies import (
    ClassState,
    Evidence,
    PolicyState,
    Proposal,
    best_per_class,
    equal_weights,
    headroom,
    step,
)
from controllers.scoreboard import PairStats, Quantiles, Scoreboard
from schema.controller import ControllerConfig
from schema.traffic import SLO

SLO_CHAT = SLO(ttft_ms=450, tpot_ms=40, attainment=0.9)
CFG = ControllerConfig(min_samples=10, hysteresis=0.1, min_dwell_s=10, explore_share=0.1)
CONFIGS = ["tp8", "tp4pp2", "pp8"]


def pair(config: str, attainment: float, ttft90: float = 0.2, tpot90: float = 0.02, samples: int = 50,
         error_rate: float = 0.0, cls: str = "chat") -> PairStats:
    return PairStats(config, cls, samples=samples, request_rate=samples / 20, attainment=attainment,
                     goodput=attainment * samples / 20, error_rate=error_rate,
                     ttft=Quantiles(ttft90 / 2, ttft90, ttft90 * 1.5), tpot=Quantiles(tpot90 / 2, tpot90, tpot90))


def unpack(p: Proposal) -> tuple[dict[str, float], ClassState, str, dict[str, Evidence]]:
    return p.weights, p.state, p.reason, p.evidence


def board(*pairs: PairStats, t: float = 0.0, stale: bool = False) -> Scoreboard:
    return Scoreboard(t, {(p.config, p.sla_class): p for p in pairs}, stale=stale)


def test_headroom_is_smallest_margin_at_the_attainment_percentile() -> None:
    p = pair("tp8", 1.0, ttft90=0.225, tpot90=0.036)
    assert headroom(p, SLO_CHAT) == pytest.approx(0.1)   # tpot: 1 - 36/40 beats ttft's 1 - 225/450
    assert headroom(PairStats("x", "chat"), SLO_CHAT) is None


def test_first_choice_is_the_config_meeting_the_slo_with_most_headroom_and_others_keep_explore_share() -> None:
    b = board(pair("tp8", 0.99, ttft90=0.1, tpot90=0.01), pair("tp4pp2", 0.95, ttft90=0.3),
              pair("pp8", 0.5, ttft90=0.9))
    w, st, reason, ev = unpack(best_per_class(b, SLO_CHAT, "chat", CONFIGS, {}, ClassState(), CFG, now=0))
    assert st.incumbent == "tp8"
    assert w == pytest.approx({"tp8": 0.9, "tp4pp2": 0.05, "pp8": 0.05})
    assert "tp8" in reason and ev["pp8"].attainment == 0.5


def test_meeting_the_slo_beats_headroom_of_a_config_that_misses_it() -> None:
    b = board(pair("tp8", 0.8, ttft90=0.05), pair("pp8", 0.95, ttft90=0.4))
    _, st, _, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], {}, ClassState(), CFG, now=0))
    assert st.incumbent == "pp8"


def test_too_few_samples_keeps_current_weights() -> None:
    b = board(pair("tp8", 1.0, samples=3), pair("pp8", 1.0, samples=9))
    cur = {"tp8": 0.5, "pp8": 0.5}
    w, st, reason, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], cur, ClassState(), CFG, now=0))
    assert w == cur and st.incumbent is None and "warming up" in reason


def test_a_first_choice_waits_for_every_configuration_but_not_past_two_windows() -> None:
    # once chosen, tp8 would leave pp8 only the exploration share: too little to ever judge it
    b = board(pair("tp8", 1.0, ttft90=0.3, samples=12), pair("pp8", 1.0, ttft90=0.1, samples=6))
    cur = {"tp8": 0.5, "pp8": 0.5}
    w, st, reason, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], cur, ClassState(), CFG, now=0))
    assert w == cur and st.incumbent is None and "warming up" in reason and "pp8" in reason
    _, st, _, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], cur, st, CFG, now=CFG.window_s))
    assert st.incumbent is None and st.judging_since == 0
    later = board(pair("tp8", 1.0, ttft90=0.3, samples=12), pair("pp8", 1.0, ttft90=0.1, samples=10))
    _, chosen, _, _ = unpack(best_per_class(later, SLO_CHAT, "chat", ["tp8", "pp8"], cur, st, CFG, now=CFG.window_s))
    assert chosen.incumbent == "pp8"        # judged both: the one with more headroom
    _, alone, reason, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], cur, st, CFG,
                                                now=2 * CFG.window_s))
    assert alone.incumbent == "tp8" and "first choice" in reason   # pp8 never reached min_samples


def test_hysteresis_keeps_incumbent_when_challenger_is_only_slightly_better() -> None:
    b = board(pair("tp8", 0.95, ttft90=0.2), pair("pp8", 0.97, ttft90=0.18))  # headroom 0.55 vs 0.5
    st = ClassState("tp8", since=-100)
    _, new, reason, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], {}, st, CFG, now=0))
    assert new.incumbent == "tp8" and reason == "keeping tp8"


def test_switch_when_incumbent_misses_slo_but_only_after_min_dwell() -> None:
    b = board(pair("tp8", 0.6), pair("pp8", 0.97))
    recent = ClassState("tp8", since=-5)
    _, new, _, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], {}, recent, CFG, now=0))
    assert new.incumbent == "tp8"          # dwell not over: no flapping
    old = ClassState("tp8", since=-11)
    w, new, reason, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], {}, old, CFG, now=0))
    assert new.incumbent == "pp8" and new.since == 0 and w["pp8"] == pytest.approx(0.9)
    assert "misses the SLO" in reason


def test_a_configuration_that_lost_the_class_by_missing_the_slo_wins_it_back_only_once_the_rate_falls() -> None:
    cfg = CFG.model_copy(update={"hysteresis": 0.25})
    configs = ["tp8", "tp1x8"]
    # at 6 req/s (120 in the 20 s window) tp8 misses the SLO: the class moves to tp1x8
    busy = board(pair("tp8", 0.5, samples=96), pair("tp1x8", 1.0, ttft90=0.38, samples=24))
    _, st, reason, _ = unpack(best_per_class(busy, SLO_CHAT, "chat", configs, {}, ClassState("tp8", -100), cfg, 0))
    assert st.incumbent == "tp1x8" and "tp8 misses the SLO" in reason and st.missed_at == {"tp8": 6.0}
    # tp8 on the exploration share only looks far better than tp1x8, which has little headroom left
    flattered = board(pair("tp8", 1.0, ttft90=0.1, samples=12), pair("tp1x8", 0.95, ttft90=0.4, samples=108))
    _, kept, reason, _ = unpack(best_per_class(flattered, SLO_CHAT, "chat", configs, {}, st, cfg, 60))
    assert kept.incumbent == "tp1x8" and "tp8 missed the SLO at 6.00 req/s" in reason
    # the class's rate falls to 1 req/s: tp8 may win the class back on headroom
    quiet = board(pair("tp8", 1.0, ttft90=0.1, samples=10), pair("tp1x8", 0.95, ttft90=0.4, samples=10))
    _, back, reason, _ = unpack(best_per_class(quiet, SLO_CHAT, "chat", configs, {}, kept, cfg, 120))
    assert back.incumbent == "tp8" and "more latency headroom" in reason and back.missed_at == {}


def test_failing_config_is_drained_at_once_even_within_dwell() -> None:
    b = board(pair("tp8", 0.1, error_rate=0.8, samples=20), pair("pp8", 0.97), pair("tp4pp2", 0.95))
    st = ClassState("tp8", since=-1)
    w, new, reason, ev = unpack(best_per_class(b, SLO_CHAT, "chat", CONFIGS, {}, st, CFG, now=0))
    assert "tp8" not in w and new.incumbent in {"pp8", "tp4pp2"} and ev["tp8"].failing
    assert "failing" in reason
    assert sum(w.values()) == pytest.approx(1.0)


def test_step_logs_decisions_only_on_change_and_observe_never_changes() -> None:
    slos = {"chat": SLO_CHAT}
    st = PolicyState(equal_weights(["chat"], CONFIGS))
    b = board(pair("tp8", 0.99, ttft90=0.1), pair("tp4pp2", 0.95), pair("pp8", 0.9, ttft90=0.4))
    same, ds = step("observe", b, slos, CONFIGS, st, CFG, now=0)
    assert same.weights == st.weights and ds == []
    same, ds = step("repartition", b, slos, CONFIGS, st, CFG, now=0)   # its transitions route, not the policy
    assert same.weights == st.weights and ds == []
    st1, ds = step("best-per-class", b, slos, CONFIGS, st, CFG, now=0)
    assert len(ds) == 1 and ds[0].chosen == "tp8" and ds[0].previous == st.weights["chat"]
    st2, ds = step("best-per-class", b, slos, CONFIGS, st1, CFG, now=2)
    assert ds == [] and st2.weights == st1.weights


def test_stale_scoreboard_keeps_the_last_decision() -> None:
    st = PolicyState({"chat": {"tp8": 0.9, "pp8": 0.1}}, {"chat": ClassState("tp8", 0)})
    b = board(pair("tp8", 0.1), pair("pp8", 1.0), stale=True)
    new, ds = step("best-per-class", b, {"chat": SLO_CHAT}, ["tp8", "pp8"], st, CFG, now=100)
    assert new is st and ds == []


def test_proportional_splits_by_attainment_with_an_exploration_floor() -> None:
    slos = {"chat": SLO_CHAT}
    st = PolicyState(equal_weights(["chat"], ["tp8", "pp8"]))
    b = board(pair("tp8", 0.9), pair("pp8", 0.3))
    new, ds = step("proportional", b, slos, ["tp8", "pp8"], st, CFG, now=0)
    w = new.weights["chat"]
    assert w["tp8"] == pytest.approx(0.05 + 0.9 * 0.75) and w["pp8"] == pytest.approx(0.05 + 0.9 * 0.25)
    assert len(ds) == 1
    # within the dwell a new split is not applied
    b2 = board(pair("tp8", 0.3), pair("pp8", 0.9))
    same, ds = step("proportional", b2, slos, ["tp8", "pp8"], new, CFG, now=5)
    assert same.weights == new.weights and ds == []


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        step("random", board(pair("tp8", 1.0)), {"chat": SLO_CHAT}, ["tp8"], PolicyState({}), CFG, 0)


def test_one_class_moves_per_step_heaviest_first_then_the_next_after_the_dwell() -> None:
    slo_sum = SLO(ttft_ms=2000, tpot_ms=200, attainment=0.9)
    slos = {"chat": SLO_CHAT, "sum": slo_sum}
    st = PolicyState({"chat": {"tp8": 0.9, "pp8": 0.1}, "sum": {"tp8": 0.9, "pp8": 0.1}},
                     {"chat": ClassState("tp8", -100), "sum": ClassState("tp8", -100)})
    b = board(pair("tp8", 0.5), pair("pp8", 1.0), pair("tp8", 0.5, cls="sum"), pair("pp8", 1.0, cls="sum"))
    tokens = {"chat": 170, "sum": 4300}
    st1, ds = step("best-per-class", b, slos, ["tp8", "pp8"], st, CFG, now=0, tokens_per_request=tokens)
    assert [(d.sla_class, d.chosen) for d in ds] == [("sum", "pp8")]
    assert st1.classes["chat"].incumbent == "tp8" and st1.last_switch == 0
    st2, ds = step("best-per-class", b, slos, ["tp8", "pp8"], st1, CFG, now=5, tokens_per_request=tokens)
    assert ds == []                                   # settling: the move is measured first
    _, ds = step("best-per-class", b, slos, ["tp8", "pp8"], st2, CFG, now=10, tokens_per_request=tokens)
    assert [(d.sla_class, d.chosen) for d in ds] == [("chat", "pp8")]


def test_draining_is_not_held_back_by_the_one_move_rule() -> None:
    slos = {"chat": SLO_CHAT, "sum": SLO_CHAT}
    st = PolicyState({c: {"tp8": 0.9, "pp8": 0.1} for c in slos},
                     {c: ClassState("tp8", -100) for c in slos}, last_switch=-1)
    b = board(pair("tp8", 0.0, error_rate=1.0), pair("pp8", 1.0),
              pair("tp8", 0.0, error_rate=1.0, cls="sum"), pair("pp8", 1.0, cls="sum"))
    _, ds = step("best-per-class", b, slos, ["tp8", "pp8"], st, CFG, now=0)
    assert {d.sla_class: d.weights["tp8"] for d in ds} == {"chat": 0.0, "sum": 0.0}


def test_overloaded_config_sheds_its_heaviest_class_even_if_that_class_still_meets_its_slo() -> None:
    slo_sum = SLO(ttft_ms=2000, tpot_ms=200, attainment=0.9)
    slos = {"chat": SLO_CHAT, "sum": slo_sum}
    st = PolicyState({c: {"tp8": 0.9, "pp8": 0.1} for c in slos}, {c: ClassState("tp8", -100) for c in slos})
    b = board(pair("tp8", 0.5), pair("pp8", 1.0, ttft90=0.3),            # chat suffers on tp8
              pair("tp8", 1.0, ttft90=0.8, cls="sum"), pair("pp8", 1.0, ttft90=0.9, cls="sum"))
    new, ds = step("best-per-class", b, slos, ["tp8", "pp8"], st, CFG, now=0,
                   tokens_per_request={"chat": 170, "sum": 4300})
    assert [(d.sla_class, d.chosen) for d in ds] == [("sum", "pp8")]
    assert "tp8 puts chat's SLO at risk" in ds[0].reason and "sum brings it the most load" in ds[0].reason
    assert new.classes["chat"].incumbent == "tp8" and new.last_switch == 0


def test_a_new_incumbent_without_samples_yet_is_kept() -> None:
    b = board(pair("tp8", 1.0, samples=2), pair("pp8", 1.0, ttft90=0.05))
    st = ClassState("tp8", since=-100)
    _, new, reason, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], {}, st, CFG, now=0))
    assert new.incumbent == "tp8" and reason == "keeping tp8"


def test_a_class_at_the_edge_of_its_slo_on_a_shared_config_also_sheds_the_heaviest() -> None:
    slo_sum = SLO(ttft_ms=2000, tpot_ms=200, attainment=0.9)
    slos = {"chat": SLO_CHAT, "sum": slo_sum}
    st = PolicyState({c: {"tp8": 0.9, "pp8": 0.1} for c in slos}, {c: ClassState("tp8", -100) for c in slos})
    b = board(pair("tp8", 0.93, ttft90=0.44), pair("pp8", 1.0, ttft90=0.1),   # chat meets, 2% headroom
              pair("tp8", 1.0, ttft90=0.8, cls="sum"), pair("pp8", 1.0, ttft90=0.9, cls="sum"))
    _, ds = step("best-per-class", b, slos, ["tp8", "pp8"], st, CFG, now=0,
                 tokens_per_request={"chat": 170, "sum": 4300})
    assert [(d.sla_class, d.chosen) for d in ds] == [("sum", "pp8")]


def test_a_drained_config_stays_out_for_the_quarantine_then_is_probed_again() -> None:
    slos = {"chat": SLO_CHAT}
    st = PolicyState({"chat": {"tp8": 0.9, "pp8": 0.1}}, {"chat": ClassState("tp8", -100)})
    failing = board(pair("tp8", 0.97, ttft90=0.1), pair("pp8", 0.0, error_rate=1.0, samples=10))
    st, ds = step("best-per-class", failing, slos, ["tp8", "pp8"], st, CFG, now=0)
    assert ds[0].weights == {"tp8": 1.0, "pp8": 0.0} and "pp8 is failing (100% errors): drained" in ds[0].reason
    quiet = board(pair("tp8", 0.97, ttft90=0.1))                     # no traffic to pp8: no errors seen
    st, ds = step("best-per-class", quiet, slos, ["tp8", "pp8"], st, CFG, now=CFG.window_s * 3 - 1)
    assert ds == [] and st.weights["chat"]["pp8"] == 0.0
    st, ds = step("best-per-class", quiet, slos, ["tp8", "pp8"], st, CFG, now=CFG.window_s * 3 + 1)
    assert st.weights["chat"]["pp8"] == pytest.approx(0.1)            # probed again with the exploration share


def test_a_class_at_the_edge_waits_while_the_heavier_class_has_no_measured_alternative() -> None:
    slo_sum = SLO(ttft_ms=2000, tpot_ms=200, attainment=0.9)
    slos = {"chat": SLO_CHAT, "sum": slo_sum}
    st = PolicyState({c: {"tp8": 0.9, "pp8": 0.1} for c in slos}, {c: ClassState("tp8", -100) for c in slos})
    b = board(pair("tp8", 0.93, ttft90=0.44), pair("pp8", 1.0, ttft90=0.1),
              pair("tp8", 1.0, ttft90=0.8, cls="sum"), pair("pp8", 1.0, ttft90=0.9, cls="sum", samples=2))
    new, ds = step("best-per-class", b, slos, ["tp8", "pp8"], st, CFG, now=0,
                   tokens_per_request={"chat": 170, "sum": 4300})
    assert ds == [] and new.classes["chat"].incumbent == "tp8"


def test_an_incumbent_with_headroom_to_spare_is_not_left_for_a_flattered_challenger() -> None:
    b = board(pair("tp8", 0.97, ttft90=0.3), pair("pp8", 1.0, ttft90=0.05))  # headroom 33% vs 89%
    _, new, _, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], {}, ClassState("tp8", -100), CFG, now=0))
    assert new.incumbent == "tp8"
    b = board(pair("tp8", 0.97, ttft90=0.42), pair("pp8", 1.0, ttft90=0.05))  # at risk: 7% headroom
    _, new, reason, _ = unpack(best_per_class(b, SLO_CHAT, "chat", ["tp8", "pp8"], {}, ClassState("tp8", -100), CFG,
                                              now=0))
    assert new.incumbent == "pp8" and "more latency headroom" in reason
