"""The one SLO judgment (`SLO.met`): boundaries, missing values, and every caller agreeing with it."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments.engines.sim.offline import RequestRecord as SimRecord
from loadgen.records import RequestRecord
from schema.traffic import SLO


def test_each_target_given_is_met_at_or_below_it() -> None:
    slo = SLO(ttft_ms=450, tpot_ms=40)
    assert slo.met(0.45, 0.04, 99.0)             # equal meets; no E2E target
    assert not slo.met(0.451, 0.01, 1.0)
    assert not slo.met(0.1, 0.041, 1.0)
    assert not SLO(e2e_ms=1000).met(0.1, 0.01, 1.001)
    assert SLO(e2e_ms=1000).met(5.0, 3.0, 1.0)   # only the targets given count


def test_missing_values() -> None:
    slo = SLO(ttft_ms=450, tpot_ms=40)
    assert slo.met(0.1, None, 1.0)               # one output token: no TPOT to judge
    assert not slo.met(None, 0.01, 1.0)          # no first token: no answer
    assert not slo.met(0.1, 0.01, None)
    assert not SLO(tpot_ms=40).met(None, None, None)


def test_attainment_target() -> None:
    slo = SLO(ttft_ms=450, attainment=0.9)
    assert slo.attained(0.9) and slo.attained(1.0)
    assert not slo.attained(0.899) and not slo.attained(None)


times = st.one_of(st.none(), st.floats(0.0, 5.0))


@given(ttft=times, tpot=times, e2e=times, status=st.sampled_from(["ok", "error", "timeout"]))
def test_the_load_generator_judges_records_with_it(ttft: float | None, tpot: float | None, e2e: float | None,
                                                   status: str) -> None:
    slo = SLO(ttft_ms=300, tpot_ms=30, e2e_ms=3000)
    r = RequestRecord(request_id="r", sla_class="chat", config="tp8", model="auto", rate_step=0, offered_rate=1.0,
                      scheduled_time=0.0, send_time=0.0, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e,
                      planned_prompt_tokens=1, max_tokens=1, status=status)  # type: ignore[arg-type]
    assert r.meets(slo) == (status == "ok" and slo.met(ttft, tpot, e2e))
    assert r.on_engine_clock(5.0).meets(slo) == (status == "ok" and slo.met(
        *(None if x is None else x / 5 for x in (ttft, tpot, e2e))))


@pytest.mark.parametrize("output_len", [1, 2, 50])
def test_a_one_token_simulated_request_has_no_tpot_to_miss(output_len: int) -> None:
    r = SimRecord("a", "chat", 0, 10, output_len, arrival=0.0, first_token=0.1, finish=0.1 + 0.05 * (output_len - 1),
                  preemptions=0, token_times=[])
    assert SLO(ttft_ms=200, tpot_ms=40).met(r.ttft, r.tpot, r.e2e) == (output_len == 1)
