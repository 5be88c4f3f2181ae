"""How far does the load generator scale with workers?

Open-loop constant-rate traffic of short streaming requests (8 one-token events) against a fast local
SSE server in its own process (bench/fast_sse.py). For each rate, in turn and with the same schedule:
a plain aiohttp client (one process, each request its own task), then the load generator with 1, 2
and 4 worker processes (`load.workers`; 1 = in its own process, as `parallax load` without --workers).
Prints achieved rate (completed requests / planned duration), send lateness p50 / p99, the share of
the schedule sent and completed, and client CPU ms per request (this process and its workers).
"Sustained" = every request completed and lateness p99 < 2 ms (the issue's goal); "carried" = every request
completed and lateness p50 < 1 ms (the sender keeps up, though a busy machine delays some sends). The last
lines give each client's highest sustained and carried rates and the ratios of 2 workers to 1.

    .venv/bin/python -m bench.loadgen_scale [--rates 1000 2000 3000 4000] [--duration 5] [--workers 1 2 4]

The server shares this machine's cores with the clients: on a small machine it caps every client alike,
so compare the clients within one run.
"""

import argparse
import asyncio
import os
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from bench.fast_sse import start_fast_sse
from bench.loadgen_rate import aiohttp_baseline
from loadgen.records import read_records
from loadgen.runner import run_load
from loadgen.sender import event_loop_factory
from schema.traffic import SLO, ConstantArrival, FixedLength, LoadConfig, TrafficClass

TOKENS = 8
LATENESS_P99_MS = 2.0
LATENESS_P50_MS = 1.0


def loadgen(workers: int) -> Callable[[str, float, float], Awaitable[tuple[list[float], int]]]:
    async def run(url: str, rate: float, duration: float) -> tuple[list[float], int]:
        cls = TrafficClass(name="bench", share=1, slo=SLO(ttft_ms=1000), input=FixedLength(value=8),
                           output=FixedLength(value=TOKENS))
        load = LoadConfig(arrival=ConstantArrival(rate=rate), duration_s=duration, workers=workers, timeout_s=30)
        with tempfile.TemporaryDirectory() as d:
            await run_load(url, [cls], load, d)
            records = read_records(Path(d))
        return [r.lateness_s for r in records if r.lateness_s is not None], sum(r.status == "ok" for r in records)
    return run


def cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (the workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(name: str, fn: Callable[[str, float, float], Awaitable[tuple[list[float], int]]], url: str,
            rate: float, duration: float) -> dict:
    load0 = os.getloadavg()[0]
    cpu0 = cpu_s()
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        lateness, ok = runner.run(fn(url, rate, duration))
    cpu = cpu_s() - cpu0
    n = int(rate * duration)
    late = np.array(lateness or [np.nan]) * 1e3
    p50, p99 = np.percentile(late, [50, 99])
    return {"client": name, "rate": rate, "planned": n, "sent": len(lateness), "ok": ok,
            "achieved": ok / duration, "p50": p50, "p99": p99, "cpu_ms": cpu / max(len(lateness), 1) * 1e3,
            "sustained": ok == n and p99 < LATENESS_P99_MS, "carried": ok == n and p50 < LATENESS_P50_MS,
            "load": load0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[1000, 2000, 3000, 4000])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    a = ap.parse_args()
    url, stop = start_fast_sse(TOKENS)
    clients: list[tuple[str, Callable]] = [("aiohttp", aiohttp_baseline)]
    clients += [(f"loadgen w={w}", loadgen(w)) for w in a.workers]
    rows = []
    try:
        for rate in a.rates:
            for name, fn in clients:
                r = measure(name, fn, url, rate, a.duration)
                rows.append(r)
                print(f"{r['client']:12} {rate:6.0f} req/s: achieved {r['achieved']:7.1f}/s  sent {r['sent']:6d}/"
                      f"{r['planned']} ok {r['ok']:6d}  lateness p50 {r['p50']:6.2f} p99 {r['p99']:7.2f} ms  "
                      f"cpu {r['cpu_ms']:.2f} ms/req  {'sustained' if r['sustained'] else 'NOT sustained'}  "
                      f"(load avg {r['load']:.1f} on {os.cpu_count()} CPUs)", flush=True)
                time.sleep(1.0)   # let the server drain its sockets between runs
    finally:
        stop()
    for key, what in (("sustained", f"lateness p99 < {LATENESS_P99_MS:g} ms"),
                      ("carried", f"lateness p50 < {LATENESS_P50_MS:g} ms")):
        best = {name: max((r["rate"] for r in rows if r["client"] == name and r[key]), default=0.0)
                for name, _ in clients}
        print(f"highest {key} rate (all completed, {what}): " + ", ".join(f"{k} {v:g}" for k, v in best.items()))
        one, two = best.get("loadgen w=1", 0.0), best.get("loadgen w=2", 0.0)
        if one and two:
            print(f"  2 workers / 1 process: {two / one:.2f}x" + (" (goal ≥ 1.7x)" if key == "sustained" else ""))


if __name__ == "__main__":
    main()
