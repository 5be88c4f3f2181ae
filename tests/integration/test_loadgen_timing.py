"""Client-side TTFT and inter-token gaps agree with the server's own timestamps (server in its own process)."""

import json
import urllib.request

import numpy as np
import pytest

from loadgen.runner import run_load
from schema.traffic import SLO, ConstantArrival, FixedLength, LoadConfig, TrafficClass
from tests.integration.sse_server import sse_server_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server():
    with sse_server_process(ttft_s=0.03, itl_s=0.01) as url:
        yield url


async def test_client_timing_matches_server_timestamps(server, tmp_path):
    chat = TrafficClass(name="chat", share=1, slo=SLO(ttft_ms=100), input=FixedLength(value=20),
                        output=FixedLength(value=20))
    summary = await run_load(server, [chat], LoadConfig(arrival=ConstantArrival(rate=10), duration_s=2), tmp_path)
    log = json.load(urllib.request.urlopen(server + "/log"))
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(records) == 20 and all(r["status"] == "ok" for r in records)
    ttft_err, itl_err = [], []
    for r in records:
        events = log["events"][r["request_id"]]
        ttft_err.append(r["ttft_s"] - (events[0] - log["arrived"][r["request_id"]]))
        assert len(r["itl_s"]) == r["output_tokens"] - 1 == len(events) - 1
        itl_err += list(np.array(r["itl_s"]) - np.diff(events))
        assert r["tpot_s"] == pytest.approx((r["e2e_s"] - r["ttft_s"]) / 19)
    itl_err_signed = itl_err
    ttft_err, itl_err = np.abs(ttft_err), np.abs(itl_err)
    q = [50, 90, 99]
    print("TTFT error p50/p90/p99 ms", np.percentile(ttft_err, q) * 1e3, "ITL error p50/p90/p99 ms",
          np.percentile(itl_err, q) * 1e3)
    # Typical error within 2 ms. The tail is the OS scheduler: on an idle 2-core machine p90 stays
    # under 2 ms too (TTFT ~1.1 ms, ITL ~0.2 ms), but a shared, oversubscribed one delays either process.
    assert np.median(ttft_err) < 0.002
    assert np.median(itl_err) < 0.002
    signed = np.array(itl_err_signed)
    assert abs(signed.mean()) < 0.001           # no systematic bias in the gaps
    assert summary.row("cfg-a", "chat").ttft_s.p50 == pytest.approx(np.median([r["ttft_s"] for r in records]))
