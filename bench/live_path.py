"""Does the live path (HTTP → Serve proxy → ingress → LLMServer → SSE back) keep the engine's timings?

Deploys a scenario (default scenarios/demo.yaml) on a local Ray and runs its own load with the load
generator (`loadgen.run_load`: the scenario's arrival process, rate steps and classes, model `auto`
with the ingress's starting weights). Each record holds the client's TTFT / TPOT and the engine's
own, which the server reports in the final usage (on the engine's clock, from the ingress's receipt).
Client times are divided by `engine.time_scale`, as the reports do. Prints, per configuration and per
(configuration, class), mean and median TTFT / TPOT both ways, their relative difference, and the
wall time each request spent on the path (client TTFT - engine TTFT).

    .venv/bin/python -m bench.live_path [SCENARIO] [--time-scale X] [--duration S]
                                        [--stream-interval-ms M] [--seed N]

`--time-scale` slows the simulated clock and offers the same engine-clock load (wall rates ÷ the
ratio, steps × the ratio), which is how to ask "how slow must the clock be for this load?".
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from deployments.deploy import deployed_locally
from deployments.resolve import check_scenario, load_scenario
from loadgen.arrivals import with_rate
from loadgen.records import RECORDS_FILE, RequestRecord, read_records
from loadgen.runner import run_load
from schema.traffic import LoadConfig, TrafficClass


def warm_up(url: str, configs: list[str]) -> None:
    """First calls set up handles and connections: make them before the measured load."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for c in configs:
            for stream in (False, True):
                body = {"model": c, "prompt": "warm up", "max_tokens": 2, "stream": stream}
                http.post("/v1/completions", json=body).raise_for_status()


def same_engine_load(load: LoadConfig, classes: list[TrafficClass], factor: float) -> LoadConfig:
    """The load that offers the same engine-clock traffic with the clock `factor` times slower: wall
    rates ÷ factor, each step `factor` times longer (as many requests)."""
    if any(c.arrival is not None for c in classes) or load.arrival.kind not in ("poisson", "gamma", "constant"):
        raise SystemExit("--time-scale keeps the engine-clock load of poisson / gamma / constant arrivals only; "
                         "edit the scenario's rates instead")
    rate = load.arrival.rate
    return load.model_copy(update={"arrival": with_rate(load.arrival, rate / factor),
                                   "rates": [r / factor for r in load.rates],
                                   "duration_s": load.duration_s * factor})


def rel(a: float | np.floating, b: float | np.floating) -> float:
    return float(a / b - 1)


def compare(label: str, recs: list[RequestRecord], scale: float) -> float:
    """Print one row; returns the worst relative difference of the row's means and medians."""
    ttft_c = np.array([x.ttft_s for x in recs]) / scale
    ttft_e = np.array([x.server_ttft_s for x in recs])
    multi = [x for x in recs if x.output_tokens > 1]
    tpot_c = np.array([x.tpot_s for x in multi]) / scale
    tpot_e = np.array([x.server_tpot_s for x in multi])
    diffs = [rel(ttft_c.mean(), ttft_e.mean()), rel(np.median(ttft_c), np.median(ttft_e)),
             rel(tpot_c.mean(), tpot_e.mean()), rel(np.median(tpot_c), np.median(tpot_e))]
    path = (ttft_c - ttft_e) * scale * 1e3   # wall ms each request spent on the path before its first token
    print(f"{label:20} {len(recs):4d} {ttft_c.mean() * 1e3:8.1f} {ttft_e.mean() * 1e3:8.1f} {diffs[0]:+7.1%} "
          f"{np.median(ttft_c) * 1e3:8.1f} {np.median(ttft_e) * 1e3:8.1f} {diffs[1]:+7.1%} "
          f"{tpot_c.mean() * 1e3:7.2f} {tpot_e.mean() * 1e3:7.2f} {diffs[2]:+6.1%} {diffs[3]:+6.1%} "
          f"{np.median(path):6.1f} / {path.max():5.0f}")
    return max(abs(d) for d in diffs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default="scenarios/demo.yaml")
    ap.add_argument("--duration", type=float, help="wall seconds per load step (default: the scenario's "
                    "duration_s, × the --time-scale ratio)")
    ap.add_argument("--time-scale", type=float,
                    help="override engine.time_scale; wall rates and step lengths follow, so the engine-clock "
                         "load (and the number of requests) stays the scenario's")
    ap.add_argument("--stream-interval-ms", type=float, help="override engine.stream_interval_ms")
    ap.add_argument("--seed", type=int, help="override load.seed")
    a = ap.parse_args()
    r = load_scenario(a.scenario)
    s = r.scenario
    engine = s.engine.model_copy(update={k: v for k, v in (
        ("time_scale", a.time_scale), ("stream_interval_ms", a.stream_interval_ms)) if v is not None})
    load = s.load
    if a.time_scale is not None:
        load = same_engine_load(load, s.classes, a.time_scale / s.engine.time_scale)
    load = load.model_copy(update={k: v for k, v in (("duration_s", a.duration), ("seed", a.seed)) if v is not None})
    r = check_scenario(s.model_copy(update={"engine": engine, "load": load}), r.source, Path(a.scenario).parent)
    s, scale = r.scenario, engine.clock_scale
    if engine.kind != "sim":
        raise SystemExit(f"{a.scenario}: bench.live_path measures the simulated engine's live path "
                         "(engine.time_scale); use a scenario with engine.kind: sim")
    with deployed_locally(r) as info, tempfile.TemporaryDirectory() as folder:
        for url in info.target.split(","):
            warm_up(url, [c.name for c in s.configurations])
        time.sleep(1.0)
        wall0 = time.monotonic()
        asyncio.run(run_load(info.target, s.classes, s.load, Path(folder) / "load", base_dir=Path(a.scenario).parent))
        wall = time.monotonic() - wall0
        records = read_records(Path(folder) / "load" / RECORDS_FILE)

    ok = [x for x in records if x.status == "ok" and x.ttft_s is not None and x.server_ttft_s is not None
          and x.output_tokens == x.max_tokens]
    steps = ", ".join(f"{x:g}" for x in (s.load.rates or ["arrival"]))  # type: ignore[list-item]
    print(f"{s.name}: {len(records)} requests (steps {steps} req/s wall, {s.load.duration_s:g} s each), "
          f"time_scale={scale:g}, stream_interval_ms={engine.stream_interval_ms:g}; {len(records) - len(ok)} failed")
    print(f"the live path carried {sum(x.output_tokens for x in ok)} tokens in {wall:.1f} s wall")
    print(f"{'':20} {'':4} {'TTFT mean (sim ms)':>25} {'TTFT median (sim ms)':>25} {'TPOT mean (sim ms)':>22} "
          f"{'TPOT':>6} {'path wall ms':>14}")
    print(f"{'config / class':20} {'n':>4} {'client':>8} {'engine':>8} {'diff':>7} {'client':>8} {'engine':>8} "
          f"{'diff':>7} {'client':>7} {'engine':>7} {'diff':>6} {'p50 d':>6} {'p50 / max':>14}")
    worst: dict[str, float] = {}
    for c in s.configurations:
        mine = [x for x in ok if x.config == c.name]
        if not mine:
            continue
        worst[c.name] = compare(c.name, mine, scale)
        for cls in s.classes:
            if pair := [x for x in mine if x.sla_class == cls.name]:
                worst[f"{c.name} / {cls.name}"] = compare(f"  {cls.name}", pair, scale)
    print("engine: the server's own figures (usage.parallax_server_*: from the ingress's receipt to the token "
          "leaving the engine); diff = client / engine - 1; path = client TTFT - engine TTFT, in wall ms")
    per_config = max(v for k, v in worst.items() if "/" not in k)
    per_pair = max(worst.values())
    print(f"worst difference (means and medians of TTFT and TPOT): per configuration {per_config:.1%}, "
          f"per (configuration, class) {per_pair:.1%}; "
          f"{'within' if per_pair <= 0.05 else 'OUTSIDE'} 5% everywhere")


if __name__ == "__main__":
    main()
