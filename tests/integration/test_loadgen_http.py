"""run_load against a real local HTTP server: faults lose no record, classes and configs travel, metrics."""

import asyncio
import json
import urllib.request
from collections import Counter

import pytest

from loadgen.errors import LoadError
from loadgen.records import META_FILE, SUMMARY_FILE, read_records
from loadgen.runner import run_load
from schema.traffic import (
    SLO,
    ClosedLoop,
    ConstantArrival,
    FixedLength,
    LoadConfig,
    PoissonArrival,
    TraceArrival,
    TrafficClass,
)
from tests.integration.sse_server import SSEServer

pytestmark = pytest.mark.integration


def cls(name, share=1.0, n_out=5, **slo):
    return TrafficClass(name=name, share=share, slo=SLO(**(slo or {"ttft_ms": 500})), input=FixedLength(value=8),
                        output=FixedLength(value=n_out))


@pytest.fixture(scope="module")
def server():
    with SSEServer(ttft_s=0.01, itl_s=0.005) as s:
        yield s


async def test_faulty_server_loses_no_record(server, tmp_path):
    before = server.log.count
    classes = [cls("flaky", 0.6), cls("hang", 0.1), cls("ok", 0.3)]
    load = LoadConfig(arrival=PoissonArrival(rate=60), duration_s=1.5, timeout_s=1.5)
    summary = await run_load(server.url, classes, load, tmp_path)
    records = read_records(tmp_path)
    sent = server.log.count - before
    assert sent == len(records) == summary.records == summary.sent > 50
    assert len({r.request_id for r in records}) == len(records)
    status = Counter((r.sla_class, r.status) for r in records)
    assert status[("hang", "timeout")] == sum(r.sla_class == "hang" for r in records) > 0
    assert status[("ok", "ok")] == sum(r.sla_class == "ok" for r in records)
    flaky = [r for r in records if r.sla_class == "flaky"]
    assert {r.status for r in flaky} == {"ok", "error"}
    for r in records:
        if r.status == "error":
            assert r.error and not r.slo_met
            assert ("HTTP 500" in r.error and r.http_status == 500) or "connection dropped after 2 chunks" in r.error
        if r.status == "timeout":
            assert "no complete response within 1.5 s" in r.error
    assert (tmp_path / SUMMARY_FILE).is_file() and (tmp_path / META_FILE).is_file()


async def test_an_error_event_and_every_end_are_recorded(server, tmp_path):
    """A stream the server ends with an error event is an error that says so (not a malformed event); every
    record keeps when it ended: an ok one when its last event came, a failed one when it failed."""
    load = LoadConfig(arrival=PoissonArrival(rate=40), duration_s=0.5, timeout_s=0.5)
    await run_load(server.url, [cls("errevent", 0.5), cls("ok", 0.3), cls("hang", 0.2)], load, tmp_path)
    records = read_records(tmp_path)
    failed = [r for r in records if r.sla_class == "errevent"]
    assert failed and all(r.status == "error" and r.error == "the server's error event after 2 chunks: "
                          "engine error: test" for r in failed)
    for r in records:
        assert r.send_time is not None and r.end_time is not None and r.end_time >= r.send_time
        if r.status == "ok":
            assert r.end_time == pytest.approx(r.send_time + r.e2e_s, abs=1e-3)
        if r.status == "timeout":
            assert r.end_time - r.send_time == pytest.approx(0.5, abs=0.2)


async def test_open_loop_stays_on_schedule_when_the_server_is_slow(tmp_path):
    with SSEServer(ttft_s=0.8, itl_s=0.01) as slow:
        load = LoadConfig(arrival=ConstantArrival(rate=40), duration_s=1.0)
        summary = await run_load(slow.url, [cls("a")], load, tmp_path)
        arrived = sorted(slow.log.arrived.values())
    records = read_records(tmp_path)
    assert len(records) == len(arrived) == 40
    # a client that waited for responses would fall 0.8 s behind per request; this one stays on time
    assert summary.lateness_max_s < 0.2
    assert arrived[-1] - arrived[0] == pytest.approx(39 / 40, abs=0.2)
    assert min(r.ttft_s for r in records) >= 0.8


async def test_closed_loop_keeps_the_user_count(tmp_path):
    with SSEServer(ttft_s=0.05, itl_s=0.01) as srv:
        load = LoadConfig(arrival=ClosedLoop(concurrency=3), duration_s=1.0)
        await run_load(srv.url, [cls("a", n_out=5)], load, tmp_path)
    records = read_records(tmp_path)
    spans = [(r.send_time, r.send_time + r.e2e_s) for r in records]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 3   # requests in flight
    # each request takes ~0.05 + 4 × 0.01 s: three users finish about 3 / 0.09 ≈ 33 per second
    assert 20 <= len(records) <= 36
    assert all(r.concurrency == 3 and r.offered_rate is None for r in records)


async def test_trace_replays_with_recorded_timing(server, tmp_path):
    gaps = [0.0, 0.1, 0.35, 0.5, 0.9]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps({"timestamp": 1000 + t, "input_tokens": 5 + i, "output_tokens": 3,
                                           "class": "b" if i % 2 else "a"}) for i, t in enumerate(gaps)))
    await run_load(server.url, [cls("a", 0.5), cls("b", 0.5)], LoadConfig(arrival=TraceArrival(path=trace)),
                   tmp_path / "run")
    records = sorted(read_records(tmp_path / "run"), key=lambda r: r.scheduled_time)
    t0 = records[0].scheduled_time
    assert [r.scheduled_time - t0 for r in records] == pytest.approx(gaps, abs=1e-6)
    assert [r.send_time - t0 for r in records] == pytest.approx(gaps, abs=0.05)
    assert [r.sla_class for r in records] == ["a", "b", "a", "b", "a"]
    assert [r.prompt_tokens for r in records] == [5, 6, 7, 8, 9]


async def test_coalesced_chunks_chat_api_and_model_field(tmp_path):
    with SSEServer(ttft_s=0.01, itl_s=0.01, send_config_header=False, model_field="tp4pp2") as srv:
        load = LoadConfig(arrival=ConstantArrival(rate=20), duration_s=0.5)
        await run_load(srv.url, [cls("multi", n_out=10)], load, tmp_path, api="chat", model="tp4pp2")
    records = read_records(tmp_path)
    assert len(records) == 10
    for r in records:
        assert r.status == "ok" and r.config == "tp4pp2" and r.output_tokens == 10
        # 4 events carrying 3, 3, 3, 1 tokens: each later event's gap is split over its tokens
        itl = r.itl_s
        assert len(itl) == 7 and itl[0] == itl[1] == itl[2] and itl[3] == itl[4] == itl[5]
        assert 0 <= sum(itl) <= r.e2e_s - r.ttft_s + 1e-6   # 0 if a busy client read all events at once
        assert r.tpot_s == pytest.approx((r.e2e_s - r.ttft_s) / 9)


async def test_metrics_endpoint_exports_client_histograms(server, tmp_path):
    scraped: list[str] = []
    port: list[int] = []

    def on_record(r):
        if len(scraped) == 0 and r.status == "ok":
            scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port[0]}/metrics").read().decode())

    load = LoadConfig(arrival=ConstantArrival(rate=20), duration_s=0.5)
    await run_load(server.url, [cls("ok", ttft_ms=500)], load, tmp_path, metrics_port=0, on_record=on_record,
                   on_metrics_port=port.append)
    text = scraped[0]
    assert 'parallax_client_requests_total{config="cfg-a",sla_class="ok",status="ok"} 1.0' in text
    assert 'parallax_client_ttft_seconds_bucket{config="cfg-a",le="0.5",sla_class="ok"} 1.0' in text
    assert 'parallax_client_slo_met_total{config="cfg-a",sla_class="ok"} 1.0' in text
    assert 'parallax_client_offered_rate{sla_class="ok"} 20.0' in text
    assert "parallax_client_itl_seconds_count" in text
    with pytest.raises(OSError):  # closed after the run
        urllib.request.urlopen(f"http://127.0.0.1:{port[0]}/metrics", timeout=2)


@pytest.mark.parametrize("name, message", [("e401", "HTTP 401 Unauthorized: the server wants credentials"),
                                           ("e404", "HTTP 404 Not Found: check --target")])
async def test_auth_and_not_found_stop_the_run_with_a_clear_message(server, tmp_path, name, message):
    load = LoadConfig(arrival=ConstantArrival(rate=20), duration_s=5)
    with pytest.raises(LoadError, match=message):
        await asyncio.wait_for(run_load(server.url, [cls(name)], load, tmp_path), 3)
    assert read_records(tmp_path)[0].http_status == int(name[1:])


async def test_unreachable_target(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LoadError, match=f"cannot reach http://127.0.0.1:{port}: Connection refused"):
        await run_load(f"http://127.0.0.1:{port}", [cls("a")], LoadConfig(), tmp_path)
    with pytest.raises(LoadError, match="give the server's base URL"):
        await run_load("127.0.0.1:8000", [cls("a")], LoadConfig(), tmp_path)


async def test_stop_event_cancels_and_records_in_flight(tmp_path):
    with SSEServer(ttft_s=0.01, itl_s=0.2) as srv:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.6, stop.set)
        load = LoadConfig(arrival=ConstantArrival(rate=10), duration_s=10)
        summary = await run_load(srv.url, [cls("a", n_out=20)], load, tmp_path, stop=stop)
        sent = srv.log.count
    records = read_records(tmp_path)
    assert summary.interrupted and len(records) == sent and 3 <= sent <= 7   # 6 on an idle machine
    assert {r.status for r in records} == {"cancelled"}
    assert summary.step_durations_s[0] == pytest.approx(0.6, abs=0.3)


async def test_busy_metrics_port_and_bad_out_dir(server, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LoadError, match=f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}"):
            await run_load(server.url, [cls("ok")], LoadConfig(duration_s=0.1), tmp_path, metrics_port=port)
    (tmp_path / "file").write_text("")
    with pytest.raises(LoadError, match="cannot create the run folder"):
        await run_load(server.url, [cls("ok")], LoadConfig(duration_s=0.1), tmp_path / "file" / "run")


async def test_server_going_away_mid_run_still_gives_every_record(tmp_path):
    srv = SSEServer(ttft_s=0.01, itl_s=0.005).__enter__()
    asyncio.get_running_loop().call_later(0.5, srv.__exit__, None, None, None)
    load = LoadConfig(arrival=ConstantArrival(rate=20), duration_s=1.0, timeout_s=2)
    summary = await run_load(srv.url, [cls("ok")], load, tmp_path)
    records = read_records(tmp_path)
    assert len(records) == summary.records == 20           # every scheduled request, served or not
    refused = [r for r in records if r.status == "error"]
    # (one request may be cut in flight as the server closes)
    assert refused and sum(r.error == f"cannot connect to {srv.url}: Connection refused" for r in refused) >= len(
        refused) - 1
    assert sum(r.status == "ok" for r in records) >= 5
