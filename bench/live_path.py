"""Does the live path (HTTP → Serve proxy → ingress → LLMServer → SSE back) keep the engine's timings?

Deploys a scenario (default scenarios/demo.yaml) on a local Ray, offers its traffic (Poisson at the
scenario's arrival rate, classes by share, lengths from the classes' distributions, model `auto`),
and times every stream on the client. The reference is the engine's own schedule: the same requests,
arriving when the client sent them, simulated offline in virtual time per configuration. Client
times are divided by `engine.time_scale` (simulated seconds). Prints per configuration the mean
TTFT / TPOT both ways and their relative difference, plus the SSE event rate the path carried.

    .venv/bin/python -m bench.live_path [SCENARIO] [--rate R] [--duration S] [--time-scale X]
                                        [--stream-interval-ms M] [--seed N]
"""

import argparse
import asyncio
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import ray

from controllers.scenario import Resolved, check_scenario, load_scenario
from deployments.cluster import start_local_ray
from deployments.deploy import deploy, teardown
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from loadgen.config import FixedLength, LognormalLength, NormalLength, PoissonArrival, UniformLength
from monitoring.prometheus import free_port


@dataclass
class Sent:
    cls: str
    prompt_len: int
    output_len: int
    at: float                     # planned send time, simulated seconds from the start
    sent: float = 0.0             # wall (monotonic) send time
    first: float | None = None    # wall time of the first token's event
    last: float | None = None
    events: int = 0
    tokens: int = 0
    config: str = ""
    status: int = 0


def sample_length(dist: object, rng: np.random.Generator) -> int:
    """Draw one length; only the analytic distributions are needed here (others: their mean)."""
    match dist:
        case FixedLength(value=v):
            return v
        case UniformLength(min=lo, max=hi):
            return int(rng.integers(lo, hi + 1))
        case NormalLength(mean=mu, std=sd, min=lo, max=hi):
            return int(np.clip(round(rng.normal(mu, sd)), lo, hi or math.inf))
        case LognormalLength(mean=mu, sigma=s, min=lo, max=hi):
            return int(np.clip(round(rng.lognormal(math.log(mu) - s * s / 2, s)), lo, hi or math.inf))
    raise SystemExit(f"bench.live_path samples fixed/uniform/normal/lognormal lengths only, not {dist}")


def workload(r: Resolved, rate: float, duration: float, seed: int) -> list[Sent]:
    rng = np.random.default_rng(seed)
    classes = r.scenario.classes
    shares = np.array([c.share for c in classes])
    out: list[Sent] = []
    t = 0.0
    while True:
        t += rng.exponential(1 / rate)
        if t > duration:
            return out
        c = classes[int(rng.choice(len(classes), p=shares / shares.sum()))]
        out.append(Sent(c.name, sample_length(c.input, rng), sample_length(c.output, rng), t))


async def stream_one(http: httpx.AsyncClient, s: Sent, t0: float, scale: float) -> None:
    await asyncio.sleep(max(0.0, t0 + s.at * scale - time.monotonic()))
    body = {"model": "auto", "prompt": " ".join(["w"] * s.prompt_len), "max_tokens": s.output_len,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    s.sent = time.monotonic()
    async with http.stream("POST", "/v1/completions", json=body, headers={"x-sla-class": s.cls}) as resp:
        s.status, s.config = resp.status_code, resp.headers.get("x-parallax-config", "")
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["text"]:
                now = time.monotonic()
                s.first = s.first or now
                s.last = now
                s.events += 1
            if event.get("usage"):
                s.tokens = event["usage"]["completion_tokens"]


async def drive(url: str, sends: list[Sent], scale: float, configs: list[str]) -> float:
    """Warm every configuration's path once (first calls set up handles and connections), then offer load."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        for c in configs:
            for stream in (False, True):
                r = await http.post("/v1/completions", json={"model": c, "prompt": "warm up", "max_tokens": 2,
                                                             "stream": stream})
                r.raise_for_status()
        await asyncio.sleep(1.0)
        t0 = time.monotonic() + 0.5
        await asyncio.gather(*(stream_one(http, s, t0, scale) for s in sends))
        return t0


def engine_reference(r: Resolved, config: str, sends: list[Sent], t0: float, scale: float) -> list[tuple[float, float]]:
    """(TTFT, TPOT) per request from the engine's own schedule: offline, same arrivals, simulated seconds."""
    c = next(c for c in r.scenario.configurations if c.name == config)
    s = r.scenario
    factory = ReplicaFactory(r.model, r.gpu, s.dtype, s.resolved_kv_dtype, c.tp, c.pp, s.engine)
    specs = [RequestSpec(x.prompt_len, x.output_len, (x.sent - t0) / scale, x.cls) for x in sends]
    return [(rec.ttft, rec.tpot) for rec in run_offline(factory, specs, replicas=c.replicas).records]



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default="scenarios/demo.yaml")
    ap.add_argument("--rate", type=float, help="requests/s (default: the scenario's arrival rate)")
    ap.add_argument("--duration", type=float, default=20.0, help="simulated seconds of arrivals")
    ap.add_argument("--time-scale", type=float, help="override engine.time_scale")
    ap.add_argument("--stream-interval-ms", type=float, help="override engine.stream_interval_ms")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    r = load_scenario(a.scenario)
    engine = r.scenario.engine.model_copy(update={k: v for k, v in (
        ("time_scale", a.time_scale), ("stream_interval_ms", a.stream_interval_ms)) if v is not None})
    r = check_scenario(r.scenario.model_copy(update={"engine": engine}), r.source, Path(a.scenario).parent)
    arrival = r.scenario.load.arrival
    rate = a.rate or (arrival.rate if isinstance(arrival, PoissonArrival) else 1.0)
    scale = engine.time_scale
    sends = workload(r, rate, a.duration, a.seed)
    folder = Path(tempfile.mkdtemp(prefix="plx-bench-"))
    try:
        start_local_ray(r, folder / "ray", free_port())
        info = deploy(r, port=free_port())
        wall0 = time.monotonic()
        t0 = asyncio.run(drive(info.url, sends, scale, [c.name for c in r.scenario.configurations]))
        wall = time.monotonic() - wall0
    finally:
        try:
            teardown()
        finally:
            ray.shutdown()
            shutil.rmtree(folder, ignore_errors=True)

    bad = [s for s in sends if s.status != 200 or s.tokens != s.output_len or s.first is None]
    events = sum(s.events for s in sends)
    print(f"{r.scenario.name}: {len(sends)} requests at {rate:g}/s over {a.duration:g} simulated s, "
          f"time_scale={scale:g}, stream_interval_ms={engine.stream_interval_ms:g}; {len(bad)} failed")
    print(f"live path carried {events} SSE token events in {wall:.1f} s wall ({events / wall:.0f}/s), "
          f"{sum(s.tokens for s in sends)} tokens")
    print(f"{'config':8} {'n':>4} {'TTFT client':>12} {'engine':>8} {'diff':>7} {'p50 diff':>8} "
          f"{'TPOT client':>12} {'engine':>8} {'diff':>7} {'p50 diff':>8} {'path wall ms p50/max':>21}")
    worst = worst_p50 = 0.0
    for c in r.scenario.configurations:
        mine = [s for s in sends if s.config == c.name and s not in bad]
        if not mine:
            continue
        ref = engine_reference(r, c.name, mine, t0, scale)
        ttft_c = np.array([(s.first - s.sent) / scale for s in mine])  # type: ignore[operator]
        ttft_e = np.array([x[0] for x in ref])
        multi = [i for i, s in enumerate(mine) if s.tokens > 1]
        tpot_c = np.array([(mine[i].last - mine[i].first) / (mine[i].tokens - 1) / scale  # type: ignore[operator]
                           for i in multi])
        tpot_e = np.array([ref[i][1] for i in multi])
        d1, d2 = ttft_c.mean() / ttft_e.mean() - 1, tpot_c.mean() / tpot_e.mean() - 1
        m1, m2 = np.median(ttft_c) / np.median(ttft_e) - 1, np.median(tpot_c) / np.median(tpot_e) - 1
        worst = max(worst, abs(d1), abs(d2))
        worst_p50 = max(worst_p50, abs(m1), abs(m2))
        path = (ttft_c - ttft_e) * scale * 1e3   # wall ms each request spent on the path before its first token
        print(f"{c.name:8} {len(mine):4d} {ttft_c.mean() * 1e3:12.1f} {ttft_e.mean() * 1e3:8.1f} {d1:+7.1%} "
              f"{m1:+8.1%} {tpot_c.mean() * 1e3:12.2f} {tpot_e.mean() * 1e3:8.2f} {d2:+7.1%} {m2:+8.1%} "
              f"{np.median(path):12.0f} / {path.max():6.0f}")
    print("TTFT/TPOT: means (and medians) in simulated ms; diff = client / engine - 1")
    print(f"worst difference of means {worst:.1%}, of medians {worst_p50:.1%} "
          f"({'within' if max(worst, worst_p50) <= 0.05 else 'OUTSIDE'} 5%)")


if __name__ == "__main__":
    main()
