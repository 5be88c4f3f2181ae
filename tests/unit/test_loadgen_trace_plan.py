"""Trace parsing (named rows and fields on bad input) and the workload plan (shares, overrides, sweeps)."""

import json
from collections import Counter

import numpy as np
import pytest

from loadgen.errors import LoadError
from loadgen.plan import Workload, build_plan
from loadgen.trace import read_trace
from schema.traffic import (
    SLO,
    ClosedLoop,
    FixedLength,
    LoadConfig,
    PoissonArrival,
    Step,
    StepArrival,
    TraceArrival,
    TrafficClass,
)

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.0000000,879,35
"""


def cls(name, share, arrival=None, n_in=10, n_out=5):
    return TrafficClass(name=name, share=share, slo=SLO(ttft_ms=100), input=FixedLength(value=n_in),
                        output=FixedLength(value=n_out), arrival=arrival)


def plan(classes, load, base_dir=None):
    return build_plan(classes, load, Workload(classes, base_dir), base_dir)


def test_azure_trace_format(tmp_path):
    (tmp_path / "azure.csv").write_text(AZURE)
    rows = read_trace(tmp_path / "azure.csv")
    assert [r.input_tokens for r in rows] == [374, 396, 879]
    assert [r.output_tokens for r in rows] == [44, 109, 35]
    assert [round(r.at_s, 6) for r in rows] == [0.0, 4.314579, 4.319410]
    assert rows[0].sla_class is None


def test_jsonl_trace_with_classes(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"timestamp": 10.0, "input_tokens": 5, "output_tokens": 3, "class": "a"},
        {"timestamp": 10.5, "input_tokens": 6, "output_tokens": 4, "class": "b"}]))
    rows = read_trace(p)
    assert [(r.at_s, r.sla_class) for r in rows] == [(0.0, "a"), (0.5, "b")]


@pytest.mark.parametrize("text, message", [
    ("timestamp,input_tokens,output_tokens\n0,5,3\n1,x,3\n", r"row 3: field 'input_tokens': 'x' is not a positive"),
    ("timestamp,input_tokens,output_tokens\n0,5,3\n1,5,-2\n", r"row 3: field 'output_tokens'"),
    ("timestamp,input_tokens,output_tokens\n0,5,3\nnoon,5,2\n", r"row 3: field 'timestamp': 'noon' is not a time"),
    ("timestamp,input_tokens,output_tokens\n5,5,3\n1,5,2\n", r"row 3: field 'timestamp': time goes backwards"),
    ("timestamp,input_tokens,output_tokens\n0,5,3\n1,,2\n", r"row 3: field 'input_tokens' is missing"),
    ("when,input_tokens,output_tokens\n0,5,3\n", r"no time column; name one of timestamp"),
])
def test_bad_trace_rows_are_named(tmp_path, text, message):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(LoadError, match=message):
        read_trace(p)


def test_trace_plan_keeps_recorded_timing_and_lengths(tmp_path):
    (tmp_path / "azure.csv").write_text(AZURE)
    steps = plan([cls("a", 1.0)], LoadConfig(arrival=TraceArrival(path="azure.csv", time_scale=0.5)), tmp_path)
    reqs = steps[0].requests
    assert [round(r.at_s, 6) for r in reqs] == [0.0, 2.157290, 2.159705]
    assert [(r.prompt_tokens, r.max_tokens) for r in reqs] == [(374, 44), (396, 109), (879, 35)]
    assert steps[0].duration_s == pytest.approx(2.159705)


def test_trace_with_an_unknown_class_is_refused(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("timestamp,input_tokens,output_tokens,class\n0,5,3,a\n1,5,2,zz\n")
    with pytest.raises(LoadError, match="request 2: field 'class': 'zz' is not a class"):
        plan([cls("a", 1.0)], LoadConfig(arrival=TraceArrival(path=p)))


def test_shares_split_the_shared_stream():
    steps = plan([cls("a", 0.7), cls("b", 0.3)], LoadConfig(arrival=PoissonArrival(rate=200), duration_s=50))
    n = Counter(r.sla_class for r in steps[0].requests)
    assert n["a"] / (n["a"] + n["b"]) == pytest.approx(0.7, abs=0.015)
    assert steps[0].class_rates == pytest.approx({"a": 140, "b": 60})


def test_a_class_with_its_own_arrival_steps_up_alone():
    burst = StepArrival(steps=[Step(at_s=0, rate=5), Step(at_s=20, rate=50)])
    steps = plan([cls("a", 0.5), cls("b", 0.5, arrival=burst)],
                 LoadConfig(arrival=PoissonArrival(rate=10), duration_s=40))
    reqs = steps[0].requests
    a = np.array([r.at_s for r in reqs if r.sla_class == "a"])
    b = np.array([r.at_s for r in reqs if r.sla_class == "b"])
    assert len(a) / 40 == pytest.approx(10, rel=0.15)        # the shared stream is all class a's
    assert np.sum(b < 20) / 20 == pytest.approx(5, rel=0.3)
    assert np.sum(b >= 20) / 20 == pytest.approx(50, rel=0.1)
    assert len({r.request_id for r in reqs}) == len(reqs)
    assert np.all(np.diff([r.at_s for r in reqs]) >= 0)


def test_sweep_steps_and_warmup():
    steps = plan([cls("a", 1.0)], LoadConfig(arrival=PoissonArrival(rate=1), rates=[10, 40], duration_s=20,
                                             warmup_s=5))
    assert [s.offered_rate for s in steps] == [10, 40]
    assert [s.length_s for s in steps] == [25, 20]
    first = steps[0].requests
    assert all(r.warmup == (r.at_s < 5) for r in first) and any(r.warmup for r in first)
    assert not any(r.warmup for r in steps[1].requests)
    assert len(steps[1].requests) / 20 == pytest.approx(40, rel=0.1)
    assert {r.rate_step for r in steps[1].requests} == {1}


def test_closed_loop_sweep_sets_users():
    steps = plan([cls("a", 1.0)], LoadConfig(arrival=ClosedLoop(concurrency=1), rates=[2, 4]))
    assert [s.closed[0].concurrency for s in steps] == [2, 4]
    assert not steps[0].requests


def test_sweeping_a_trace_is_refused(tmp_path):
    with pytest.raises(LoadError, match=r"load\.rates: a sweep needs a poisson"):
        plan([cls("a", 1.0)], LoadConfig(arrival=TraceArrival(path="t.csv"), rates=[1, 2]))
