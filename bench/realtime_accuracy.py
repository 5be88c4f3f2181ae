"""How closely the real-time SimEngine delivers tokens to the simulated schedule.

50 streams (arrivals spread over half a second) through one Llama-3.1-70B FP8 TP8 replica. The
same workload is simulated offline; the real-time run reproduces that schedule exactly, and each
token's lateness is the wall time a client receives it minus the wall time the simulated clock
reaches it. Prints p50 / p99 / max lateness in ms, split into the clock timer's own lateness (the
OS waking the process: machine load) and the delivery from the timer to the client (the engine).

    .venv/bin/python -m bench.realtime_accuracy [--streams 50] [--output-len 200] [--time-scale 1]
"""

import argparse
import asyncio
import bisect
import os
import time

import numpy as np

from deployments.catalog.gpus import resolve_gpu
from deployments.catalog.models import resolve_model
from deployments.engines.base import GenerationRequest
from deployments.engines.sim.engine import SimEngine
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from schema.deployment import DeploymentSpec, EngineConfig, Hardware, ParallelConfig
from schema.dtypes import Dtype


async def realtime(spec: DeploymentSpec, par: ParallelConfig,
                   reqs: list[RequestSpec]) -> tuple[list[list[float]], list[float], dict[str, list[float]], SimEngine]:
    """Wall receipt time of every token at the client, the wall start time of every clock tick, and the
    simulated token times of every request."""
    engine = SimEngine(spec, par, resolve_model(spec.model), resolve_gpu(spec.hardware.gpu))
    simulated: dict[str, list[float]] = {}
    engine.core.on_finish = lambda seq, t: simulated.__setitem__(seq.request_id, seq.token_times)
    ticks: list[float] = []
    tick = engine._tick

    def timed_tick() -> None:   # instrumentation only: note when the clock timer really fired
        ticks.append(time.monotonic())
        tick()

    engine._tick = timed_tick  # type: ignore[method-assign]
    await engine.start()
    await asyncio.sleep(0.05)   # let the clock task settle before the first arrival
    received: list[list[float]] = [[] for _ in reqs]

    async def client(i: int, r: RequestSpec) -> None:
        # queued ahead with its exact arrival time, so the simulated schedule equals the offline one
        req = GenerationRequest(str(i), " ".join(["w"] * r.prompt_len), r.output_len, "bench",
                                arrival_time=engine.wall_time(r.arrival))
        async for chunk in engine.generate(req):
            now = time.monotonic()
            received[i].extend([now] * chunk.num_tokens)

    await asyncio.gather(*(client(i, r) for i, r in enumerate(reqs)))
    await engine.shutdown()
    return received, ticks, simulated, engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=200)
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--gpu", default="h100-sxm")
    args = ap.parse_args()

    engine_cfg = EngineConfig(time_scale=args.time_scale)
    spec = DeploymentSpec(model="llama-3.1-70b", dtype=Dtype.fp8, hardware=Hardware(gpu=args.gpu),
                          engine=engine_cfg, configurations=[ParallelConfig(name="tp8", tp=8)])
    par = spec.configurations[0]
    rng = np.random.default_rng(0)
    arrivals = np.sort(rng.uniform(0.1, 0.6, args.streams))
    reqs = [RequestSpec(args.input_len, args.output_len, float(a)) for a in arrivals]

    factory = ReplicaFactory(resolve_model(spec.model), resolve_gpu(args.gpu), spec.dtype, spec.resolved_kv_dtype,
                             par.tp, par.pp, engine_cfg)
    expected = run_offline(factory, reqs).records
    received, ticks, simulated, engine = asyncio.run(realtime(spec, par, reqs))
    drift = max(abs(a - b) for rec in expected for a, b in zip(rec.token_times, simulated[rec.request_id], strict=True))

    late, wake, deliver = [], [], []
    for rec, got in zip(expected, received, strict=True):
        if len(got) != len(rec.token_times):
            raise SystemExit(f"request {rec.request_id}: {len(got)} tokens received, {len(rec.token_times)} expected")
        for g, t in zip(got, rec.token_times, strict=True):
            due = engine.wall_time(t)
            fired = ticks[bisect.bisect_left(ticks, due)]   # the first tick at or after the token's time
            late.append(g - due)
            wake.append(fired - due)
            deliver.append(g - fired)
    print(f"{args.streams} streams, {len(late)} tokens, 70B fp8 tp8 on {args.gpu}, time_scale {args.time_scale}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"simulated token times vs the offline run: max difference {drift * 1e9:.3f} ns")
    for name, values in (("lateness", late), ("  timer wake (OS)", wake), ("  delivery (engine)", deliver)):
        ms = np.asarray(values) * 1e3
        p50, p99 = np.percentile(ms, [50, 99])
        print(f"{name:20s} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   max {ms.max():7.3f} ms   min {ms.min():7.3f} ms")


if __name__ == "__main__":
    main()
