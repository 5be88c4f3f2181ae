"""How long each step of a transition takes on the simulated engine: deploy, route, drain, remove.

Deploys a scenario of one TP2 configuration on 4 logical GPUs (a fresh local Ray, simulated engines whose
start, `engine.startup_s`, is `--startup` engine-clock seconds), runs a constant load (`--rate` requests/s of
`--tokens` output tokens, so that a drain has requests to wait for), and moves the set back and forth
`--cycles` times, make-before-break: deploy 2×TP1 → route every class to it → drain TP2 → remove TP2 → deploy
TP2 → route → drain 2×TP1 → remove 2×TP1. Prints each step kind's seconds (min / median / max over the
steps taken: what `fleet.execute` returned) beside the modelled start, and the load's outcome (every request
should be ok).

    .venv/bin/python -m bench.serving_set_steps [--cycles 2] [--rate 4] [--tokens 64] [--startup 2]

A Deploy's time is the simulated start plus Serve's own (replica actor, placement group, health check,
every ingress replica's handle learning the replicas); a Remove's is Serve's graceful stop plus the wait
until Ray has removed the placement groups; a Route's is the store's version reaching every ingress replica.
"""

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from deployments import fleet
from deployments.deploy import deployed_locally
from deployments.resolve import Resolved, parse_scenario
from deployments.startup import modelled_start_s
from deployments.steps import Deploy, Drain, Remove, Route, Step
from loadgen.records import read_records
from loadgen.runner import run_load
from schema.deployment import ParallelConfig
from schema.traffic import LoadConfig

TIMEOUT_S = 300.0


def scenario(startup_s: float | None, tokens: int) -> Resolved:
    return parse_scenario({
        "name": "serving-set-steps", "model": "llama-3.1-8b",
        "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 1},
        "engine": {"kind": "sim", "max_model_len": 4096, "startup_s": startup_s},
        "configurations": [{"name": "tp2", "tp": 2}],
        "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 10000},
                     "input": {"kind": "fixed", "value": 64}, "output": {"kind": "fixed", "value": tokens}}],
    })


def move(old: str, new: ParallelConfig) -> list[Step]:
    """Make-before-break from `old` to `new`."""
    return [Deploy(new, "bench"), Route({"chat": {new.name: 1.0}}, "bench"), Drain(old, "bench"),
            Remove(old, "bench")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--startup", type=float, default=2.0, help="engine.startup_s (engine-clock seconds)")
    a = ap.parse_args()
    resolved = scenario(a.startup, a.tokens)
    took: dict[str, list[float]] = defaultdict(list)
    with deployed_locally(resolved) as app, tempfile.TemporaryDirectory() as out:
        stop = asyncio.Event()
        loops: list[asyncio.AbstractEventLoop] = []

        async def load() -> None:
            loops.append(asyncio.get_running_loop())
            load = LoadConfig(arrival={"kind": "constant", "rate": a.rate}, duration_s=3600)
            await run_load(app.target, list(resolved.scenario.classes), load, Path(out), stop=stop)

        side = threading.Thread(target=lambda: asyncio.run(load()), daemon=True)
        side.start()
        time.sleep(3.0)
        current = "tp2"
        for i in range(a.cycles):
            for new in (ParallelConfig(name=f"tp1-{i}", tp=1, replicas=2), ParallelConfig(name=f"tp2-{i}", tp=2)):
                for step in move(current, new):
                    took[type(step).__name__.lower()].append(fleet.execute(step, resolved, TIMEOUT_S))
                current = new.name
        time.sleep(2.0)
        loops[0].call_soon_threadsafe(stop.set)
        side.join(timeout=120)
        records = read_records(Path(out))
    statuses = Counter(r.status for r in records if r.send_time is not None)
    default = scenario(None, a.tokens)   # the modelled start without the override, for comparison
    print(f"simulated start: engine.startup_s = {a.startup:g} s; modelled default (weights ÷ host-to-device + "
          f"warm-up): TP2 {modelled_start_s(default, ParallelConfig(name='x', tp=2)):.1f} s, "
          f"TP1 {modelled_start_s(default, ParallelConfig(name='x', tp=1)):.1f} s")
    print(f"{'step':<8} {'n':>3} {'min s':>8} {'median s':>9} {'max s':>8}")
    for kind in ("deploy", "route", "drain", "remove"):
        xs = took[kind]
        print(f"{kind:<8} {len(xs):>3} {min(xs):>8.3f} {statistics.median(xs):>9.3f} {max(xs):>8.3f}")
    print(f"load: {a.rate:g} req/s × {a.tokens} output tokens; records by status: {dict(statuses)} "
          "(cancelled: cut off when the load stopped)")


if __name__ == "__main__":
    main()
