"""How fast can the load generator send, and how well does it keep its schedule?

Open-loop constant-rate traffic of short streaming requests (8 tokens) against a fast local SSE
server in its own process. For each rate, three clients run in turn with the same schedule:
the load generator (`run_load`), a plain aiohttp client and a plain httpx client, each sending
every request as its own task. Prints achieved rate, send lateness p50 / p99 / max, completed
requests and client CPU time per request. "Sustained" = every request completed and lateness p99 < 5 ms.

    .venv/bin/python bench/loadgen_rate.py [--rates 200 400 800] [--duration 10]
"""

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fast_sse import start_fast_sse
from loadgen.records import read_records
from loadgen.runner import run_load
from loadgen.sender import event_loop_factory
from schema.traffic import SLO, ConstantArrival, FixedLength, LoadConfig, TrafficClass

TOKENS = 8
LOOP: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop


BODY = {"model": "bench", "prompt": "a b c d e f g h", "max_tokens": TOKENS, "stream": True,
        "stream_options": {"include_usage": True}}


async def _open_loop(rate: float, duration: float, send: Callable[[], Awaitable[bool]]) -> tuple[list[float], int]:
    """The baselines' scheduler: sleep until each due time, start the request as a task."""
    lateness: list[float] = []
    ok = 0
    errors: dict[str, int] = {}

    async def one(due: float) -> None:
        nonlocal ok
        lateness.append(time.perf_counter() - due)  # as the load generator stamps it: just before sending
        try:
            done = await send()  # not `ok += await ...`: that reads ok before the await
            ok += done
        except Exception as e:  # a failed request is counted as not ok, with its reason
            errors[f"{type(e).__name__}: {e}"[:100]] = errors.get(f"{type(e).__name__}: {e}"[:100], 0) + 1

    tasks = set()
    t0 = time.perf_counter()
    for i in range(int(rate * duration)):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    for msg, n in errors.items():
        print(f"  {n} failed: {msg}")
    return lateness, ok


async def aiohttp_baseline(url: str, rate: float, duration: float) -> tuple[list[float], int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def send() -> bool:
            async with s.post(url + "/v1/completions", json=BODY) as r:
                async for _ in r.content:
                    pass
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
                return True
        return await _open_loop(rate, duration, send)


async def httpx_baseline(url: str, rate: float, duration: float) -> tuple[list[float], int]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000)
    async with httpx.AsyncClient(limits=limits, timeout=60) as c:
        async def send() -> bool:
            async with c.stream("POST", url + "/v1/completions", json=BODY) as r:
                async for _ in r.aiter_lines():
                    pass
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}")
                return True
        return await _open_loop(rate, duration, send)


async def loadgen(url: str, rate: float, duration: float) -> tuple[list[float], int]:
    cls = TrafficClass(name="bench", share=1, slo=SLO(ttft_ms=1000), input=FixedLength(value=8),
                       output=FixedLength(value=TOKENS))
    with tempfile.TemporaryDirectory() as d:
        await run_load(url, [cls], LoadConfig(arrival=ConstantArrival(rate=rate), duration_s=duration), d)
        records = read_records(Path(d))
    for msg, n in Counter((r.error or "")[:100] for r in records if r.status != "ok").items():
        print(f"  {n} failed: {msg}")
    return [r.lateness_s for r in records if r.lateness_s is not None], sum(r.status == "ok" for r in records)


def measure(name: str, fn: Callable, url: str, rate: float, duration: float) -> dict:
    cpu0, t0 = time.process_time(), time.perf_counter()
    with asyncio.Runner(loop_factory=LOOP) as runner:
        lateness, ok = runner.run(fn(url, rate, duration))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    late = np.array(lateness) * 1000
    n = int(rate * duration)
    p50, p99 = np.percentile(late, [50, 99])
    return {"client": name, "rate": rate, "sent": len(late), "ok": ok, "achieved": len(late) / duration,
            "p50_ms": p50, "p99_ms": p99, "max_ms": late.max(), "cpu_ms_per_req": cpu / max(len(late), 1) * 1000,
            "wall_s": wall, "sustained": ok == n and p99 < 5.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[200, 400, 800])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the clients this many times per rate")
    ap.add_argument("--asyncio", action="store_true", help="asyncio's own event loop, not uvloop (the CLI's)")
    args = ap.parse_args()
    global LOOP
    LOOP = (None if args.asyncio else event_loop_factory()) or asyncio.new_event_loop
    print(f"event loop: {LOOP.__module__}.{LOOP.__qualname__}")
    url, stop_server = start_fast_sse(TOKENS)
    rows = []
    try:
        for rate, _, (name, fn) in itertools.product(args.rates, range(args.repeat), (
                ("loadgen", loadgen), ("aiohttp", aiohttp_baseline), ("httpx", httpx_baseline))):
            load1 = os.getloadavg()[0]
            rows.append(measure(name, fn, url, rate, args.duration))
            r = rows[-1]
            print(f"{r['client']:8s} {r['rate']:6.0f} req/s: sent {r['sent']:5d} ok {r['ok']:5d} "
                  f"achieved {r['achieved']:7.1f}/s  lateness p50 {r['p50_ms']:6.2f} p99 {r['p99_ms']:7.2f} "
                  f"max {r['max_ms']:7.2f} ms  cpu {r['cpu_ms_per_req']:.2f} ms/req  "
                  f"{'sustained' if r['sustained'] else 'NOT sustained'}  (load avg {load1:.1f} on "
                  f"{os.cpu_count()} CPUs)", flush=True)
    finally:
        stop_server()


if __name__ == "__main__":
    main()
