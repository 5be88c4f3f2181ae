"""SLO verdicts, per-(config, class) figures and goodput; inter-token gaps of coalesced chunks."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.client import _gaps
from loadgen.records import RequestRecord, read_records, write_records
from loadgen.summary import rescore, summarize
from schema.traffic import SLO


def rec(i, cls="chat", config="tp8", ttft=0.1, tpot=0.02, e2e=1.0, status="ok", out=50, step=0, warmup=False,
        lateness=0.001):
    return RequestRecord(request_id=str(i), sla_class=cls, config=config, model="auto", rate_step=step,
                         offered_rate=2.0, warmup=warmup, scheduled_time=100.0 + i, send_time=100.0 + i + lateness,
                         ttft_s=ttft if status == "ok" else None, tpot_s=tpot if status == "ok" else None,
                         itl_s=[tpot or 0.0] * (out - 1) if status == "ok" else [],
                         e2e_s=e2e if status == "ok" else None,
                         prompt_tokens=10, planned_prompt_tokens=10, output_tokens=out if status == "ok" else 0,
                         max_tokens=out, status=status)


def test_slo_verdict_checks_every_target():
    slo = SLO(ttft_ms=200, tpot_ms=30, e2e_ms=2000)
    assert rec(0).meets(slo)
    assert not rec(0, ttft=0.25).meets(slo)
    assert not rec(0, tpot=0.031).meets(slo)
    assert not rec(0, e2e=2.5).meets(slo)
    assert not rec(0, status="timeout").meets(slo)
    assert rec(0, tpot=None).meets(SLO(ttft_ms=200, tpot_ms=30))   # one output token: no TPOT


def test_summary_groups_percentiles_goodput():
    records = [rec(i, ttft=0.01 * (i + 1)) for i in range(100)]                  # TTFT 10..1000 ms
    records += [rec(100 + i, cls="sum", config="pp8", status="error") for i in range(10)]
    records += [rec(200, warmup=True, ttft=9.0)]
    slos = {"chat": SLO(ttft_ms=500, attainment=0.9), "sum": SLO(e2e_ms=5000)}
    scored = rescore(records, slos)
    s = summarize(scored, slos, {0: 50.0})
    chat = s.row("tp8", "chat")
    assert chat is not None and chat.count == 100 and chat.ok == 100
    assert chat.ttft_s.p50 == pytest.approx(0.505) and chat.ttft_s.p99 == pytest.approx(0.9901)
    assert chat.slo_attainment == 0.5 and chat.meets_target is False
    assert chat.goodput == pytest.approx(50 / 50.0)                 # requests meeting the SLO per second
    assert chat.request_throughput == pytest.approx(2.0)
    assert chat.output_tokens_per_s == pytest.approx(100 * 50 / 50.0)
    assert chat.itl_s.p50 == pytest.approx(0.02)
    bad = s.row("pp8", "sum")
    assert bad.errors == 10 and bad.goodput == 0 and bad.ttft_s is None
    assert s.records == 111 and s.lateness_p99_s == pytest.approx(0.001)


def test_engine_clock_judges_and_reports_wall_times_divided_by_the_time_scale():
    # 5x slower simulated clock: 200 ms of wall TTFT is 40 ms of engine time, 2 req/s wall is 10 on the engine
    records = [rec(i, ttft=0.2, tpot=0.045, e2e=2.5) for i in range(10)]
    slos = {"chat": SLO(ttft_ms=50, tpot_ms=10)}
    wall = summarize(rescore(records, slos), slos, {0: 10.0}).row("tp8", "chat")
    engine = summarize(rescore(records, slos, 5.0), slos, {0: 10.0}, time_scale=5.0)
    row = engine.row("tp8", "chat")
    assert wall is not None and wall.slo_attainment == 0.0
    assert row is not None and row.slo_attainment == 1.0 and engine.engine_time_scale == 5.0
    assert row.ttft_s.p50 == pytest.approx(0.04) and row.tpot_s.p50 == pytest.approx(0.009)
    assert row.offered_rate == pytest.approx(10.0) and row.request_throughput == pytest.approx(5.0)
    assert engine.duration_s == pytest.approx(2.0) and row.goodput == pytest.approx(5.0)


def test_rescore_with_other_slos_changes_verdicts():
    records = [rec(i, ttft=0.1 * (i + 1)) for i in range(10)]
    loose = rescore(records, {"chat": SLO(ttft_ms=1000)})
    tight = rescore(loose, {"chat": SLO(ttft_ms=350)})
    assert sum(r.slo_met for r in loose) == 10 and sum(r.slo_met for r in tight) == 3


def test_records_round_trip(tmp_path):
    records = [rec(i) for i in range(3)]
    write_records(tmp_path / "records.jsonl", records)
    assert read_records(tmp_path) == records


def test_gaps_of_coalesced_chunks():
    # chunks at 0 (1 token), 0.3 (3 tokens), 0.4 (1 token): gaps 0.1, 0.1, 0.1, 0.1
    assert _gaps([0.0, 0.3, 0.4], [1, 3, 1], 5) == pytest.approx([0.1] * 4)
    # word counts 1,1,2 scaled to a usage total of 8 tokens: chunk 3 carries 4 tokens
    assert _gaps([0.0, 0.1, 0.5], [1, 1, 2], 8) == pytest.approx([0.05, 0.05, 0.1, 0.1, 0.1, 0.1])


@given(st.lists(st.tuples(st.floats(0.0001, 1.0), st.integers(1, 5)), min_size=1, max_size=30))
def test_gaps_sum_to_the_stream_span_and_count_every_later_token(chunks):
    times = list(np.cumsum([g for g, _ in chunks]))
    tokens = [k for _, k in chunks]
    gaps = _gaps(times, tokens, sum(tokens))
    assert len(gaps) == sum(tokens) - tokens[0]
    assert sum(gaps) == pytest.approx(times[-1] - times[0], abs=1e-5)
