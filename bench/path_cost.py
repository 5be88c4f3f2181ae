"""Where does a request's wall time and CPU time go on the live path?

Deploys a one-configuration scenario (simulated TP8 engine, `--time-scale` 0.01 by default so that
the engine's own time is a fraction of a millisecond) on a local Ray and sends sequential streaming
requests (16-word prompt; 1 token, then `--tokens` tokens) along four paths, each step adding hops:

    floor     client → plain aiohttp SSE server in its own process (an HTTP exchange on this machine)
    health    client → Serve proxy → ingress `GET /health` (proxy and ingress, no model call)
    handle    driver → DeploymentHandle → LLMServer.generate (one Ray hop each way, the replica, engine)
    full      client → proxy → ingress → LLMServer → ingress → proxy → client (the live path)

For each: TTFT and E2E p50 / p99 (wall ms), the per-event cost of streaming (E2E slope over tokens,
minus the engine's own TPOT), and CPU ms per request of each process (from /proc: the client, the
Serve proxy, the ingress replica(s), the LLMServer replica). Then the breakdown of the full path's
added TTFT (client TTFT - the server's own, which counts from the ingress's receipt).

    .venv/bin/python -m bench.path_cost [--requests 200] [--tokens 32] [--env KEY=VALUE ...]

`--env` sets environment variables for the whole local cluster (e.g. Ray Serve's
RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0), to compare settings within one machine state.
"""

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from ray import serve

from bench.fast_sse import start_fast_sse
from controllers.scenario import Resolved, parse_scenario
from deployments.app_args import APP_NAME, server_deployment_name
from deployments.deploy import deployed_locally
from loadgen.wire import Job

PROMPT = " ".join(["word"] * 16)
TICK = os.sysconf("SC_CLK_TCK")
IDLE_S = 3.0


def scenario(time_scale: float, ingress_replicas: int, direct: bool) -> Resolved:
    data = {
        "name": "path-cost", "model": "llama-3.1-70b", "dtype": "fp8",
        "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": 1},
        "engine": {"kind": "sim", "time_scale": time_scale, "max_model_len": 4096},
        "configurations": [{"name": "tp8", "tp": 8}],
        "server": {"ingress_replicas": ingress_replicas, "direct_ingress": direct},
        "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 1000},
                     "input": {"kind": "fixed", "value": 16}, "output": {"kind": "fixed", "value": 1}}],
    }
    return parse_scenario(data)


# --- per-process CPU ------------------------------------------------------------------------------
def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below `root` (this driver's Ray cluster)."""
    parent: dict[int, int] = {}
    cmd: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            cmd[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        for child, par in parent.items():
            if par == p and child not in out:
                out[child] = cmd[child]
                todo.append(child)
    return out


ROLES = {"proxy": "ray::ProxyActor", "ingress": f"ray::ServeReplica:{APP_NAME}:ingress",
         "replica": f"ray::ServeReplica:{APP_NAME}:{server_deployment_name('tp8')}"}


def serve_processes() -> dict[str, list[int]]:
    procs = _descendants(os.getpid())
    return {role: [pid for pid, c in procs.items() if c.startswith(prefix)] for role, prefix in ROLES.items()}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Figures:
    name: str
    ttft: np.ndarray           # wall ms
    e2e: np.ndarray
    server_ttft: np.ndarray    # the server's own TTFT, wall ms (from usage × time_scale); empty if none
    added: np.ndarray          # client TTFT - server TTFT per request, wall ms
    per_event: float           # wall ms per extra token event (E2E slope minus the engine's TPOT)
    cpu: dict[str, float]      # process role -> CPU ms per request, beyond what it burns when idle
    event_cpu: dict[str, float]  # process role -> CPU ms per extra token event


async def _sse(session: aiohttp.ClientSession, method: str, url: str, body: Any) -> tuple[float, float, dict]:
    """(TTFT s, E2E s, last usage) of one request; TTFT = first data event."""
    t0 = time.perf_counter()
    first = None
    usage: dict = {}
    async with session.request(method, url, json=body, headers={"x-sla-class": "chat"}) as r:
        r.raise_for_status()
        async for line in r.content:
            if first is None:
                first = time.perf_counter()
            if line.startswith(b"data: {") and b'"usage"' in line:
                usage = json.loads(line[6:]).get("usage") or {}
    end = time.perf_counter()
    return (first or end) - t0, end - t0, usage


async def measure(name: str, n: int, tokens: int, scale: float,
                  one: Callable[[int], Awaitable[tuple[float, float, dict]]]) -> Figures:
    """n requests of 1 token (TTFT, CPU) then n // 4 of `tokens` tokens (per-event slope)."""
    for _ in range(5):
        await one(1)
    procs = serve_processes()
    me = os.getpid()

    def cpu() -> dict[str, float]:
        return {role: sum(cpu_seconds(p) for p in pids) for role, pids in procs.items()} | {"client": cpu_seconds(me)}

    t0, idle0 = time.perf_counter(), cpu()
    await asyncio.sleep(IDLE_S)   # what the processes burn with no request (metrics, health checks)
    t1, before = time.perf_counter(), cpu()
    rows = [await one(1) for _ in range(n)]
    t2, after = time.perf_counter(), cpu()
    idle_rate = {role: (before[role] - idle0[role]) / (t1 - t0) for role in before}
    long = [await one(tokens) for _ in range(max(5, n // 4))]
    t3, end = time.perf_counter(), cpu()
    ttft = np.array([r[0] for r in rows]) * 1e3
    e2e = np.array([r[1] for r in rows]) * 1e3
    server = np.array([r[2]["parallax_server_ttft_ms"] * scale for r in rows if "parallax_server_ttft_ms" in r[2]])
    added = np.array([r[0] * 1e3 - r[2]["parallax_server_ttft_ms"] * scale for r in rows
                      if "parallax_server_ttft_ms" in r[2]])
    engine_tpot = [r[2]["parallax_server_tpot_ms"] * scale for r in long if "parallax_server_tpot_ms" in r[2]]
    slope = (np.median([r[1] for r in long]) * 1e3 - np.median(e2e)) / (tokens - 1)
    per_event = slope - (float(np.median(engine_tpot)) if engine_tpot else 0.0)
    roles = [role for role in after if role == "client" or procs.get(role)]
    per_request = {role: max(0.0, after[role] - before[role] - idle_rate[role] * (t2 - t1)) / n * 1e3
                   for role in roles}
    per_long = {role: max(0.0, end[role] - after[role] - idle_rate[role] * (t3 - t2)) / len(long) * 1e3
                for role in roles}
    event_cpu = {role: (per_long[role] - per_request[role]) / (tokens - 1) for role in roles}
    return Figures(name, ttft, e2e, server, added, per_event, per_request, event_cpu)


def _job(tokens: int) -> Job:
    return Job(request_id=f"cmpl-{uuid.uuid4().hex}", kind="completion", model="tp8", prompt=PROMPT,
               max_tokens=tokens, min_tokens=tokens, temperature=0.0, ignore_eos=True, sla_class="chat",
               include_usage=True, arrival_wall=time.time())


async def run_all(url: str, direct: list[str], floor_url: str, n: int, tokens: int, scale: float) -> list[Figures]:
    body = {"model": "tp8", "prompt": PROMPT, "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True}
    handle = serve.get_deployment_handle(server_deployment_name("tp8"), app_name=APP_NAME).options(stream=True)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def floor(k: int) -> tuple[float, float, dict]:
            return await _sse(s, "POST", floor_url + "/v1/completions", body | {"max_tokens": k})

        async def health(_: int) -> tuple[float, float, dict]:
            return await _sse(s, "GET", url + "/health", None)

        async def via_handle(k: int) -> tuple[float, float, dict]:
            t0 = time.perf_counter()
            first = None
            usage: dict = {}
            async for item in handle.generate.remote(_job(k)):
                if first is None and isinstance(item, str):
                    first = time.perf_counter()
                if isinstance(item, str) and '"usage"' in item:
                    usage = json.loads(item[6:])["usage"]
            end = time.perf_counter()
            return (first or end) - t0, end - t0, usage

        async def full(k: int) -> tuple[float, float, dict]:
            return await _sse(s, "POST", url + "/v1/completions", body | {"max_tokens": k})

        out = [await measure("floor (aiohttp)", n, tokens, scale, floor)]
        out.append(await measure("health (proxy+ingress)", n, tokens, scale, health))
        out.append(await measure("handle → replica", n, tokens, scale, via_handle))
        out.append(await measure("full path", n, tokens, scale, full))
        for d in direct[:1]:
            async def direct_full(k: int, d: str = d) -> tuple[float, float, dict]:
                return await _sse(s, "POST", d + "/v1/completions", body | {"max_tokens": k})

            async def direct_health(_: int, d: str = d) -> tuple[float, float, dict]:
                return await _sse(s, "GET", d + "/health", None)
            out.append(await measure("health, direct ingress", n, tokens, scale, direct_health))
            out.append(await measure("full, direct ingress", n, tokens, scale, direct_full))
        return out


def report(figs: list[Figures]) -> None:
    roles = ["client", "proxy", "ingress", "replica"]
    print(f"{'path':24} {'TTFT p50':>8} {'p99':>6} {'E2E p50':>8} {'srv TTFT':>8} {'ms/event':>8}   "
          + "  ".join(f"{r:>7}" for r in roles) + "   (CPU ms per request)")
    for f in figs:
        srv = f"{np.median(f.server_ttft):8.2f}" if len(f.server_ttft) else f"{'-':>8}"
        cpus = "  ".join(f"{f.cpu[r]:7.2f}" if r in f.cpu else f"{'-':>7}" for r in roles)
        print(f"{f.name:24} {np.median(f.ttft):8.2f} {np.percentile(f.ttft, 99):6.2f} {np.median(f.e2e):8.2f} "
              f"{srv} {f.per_event:8.3f}   {cpus}")
    floor, health, handle, full = figs[:4]
    print("\nbreakdown of the full path's TTFT (wall ms, medians):")
    parts = [
        ("HTTP exchange (client, socket, a server's loop)", np.median(floor.ttft)),
        ("Serve proxy + ingress, trivial route (GET /health)", np.median(health.ttft) - np.median(floor.ttft)),
        ("hop in to the replica + admission + engine (handle's server TTFT)", np.median(handle.server_ttft)),
        ("first event back from the replica to its caller", np.median(handle.ttft) - np.median(handle.server_ttft)),
    ]
    rest = np.median(full.ttft) - sum(p for _, p in parts)
    for label, ms in [*parts, ("the ingress's completion work + relaying the event (rest)", rest)]:
        print(f"  {label:62} {ms:6.2f}")
    print(f"  {'full path TTFT':62} {np.median(full.ttft):6.2f}")
    print("\nCPU ms per extra token event: " + "; ".join(
        f"{f.name}: " + ", ".join(f"{r} {f.event_cpu[r]:.3f}" for r in roles if r in f.event_cpu) for f in figs))
    for f in [full, *figs[5::2]]:
        print(f"added TTFT (client TTFT - server TTFT), {f.name}: p50 {np.percentile(f.added, 50):.2f} ms, "
              f"p99 {np.percentile(f.added, 99):.2f} ms; per token event {f.per_event:.3f} ms "
              f"(handle only {handle.per_event:.3f}, floor {floor.per_event:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--time-scale", type=float, default=0.01)
    ap.add_argument("--ingress-replicas", type=int, default=1)
    ap.add_argument("--no-direct", action="store_true", help="server.direct_ingress: false (only Serve's proxy)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the local cluster (repeat)")
    a = ap.parse_args()
    for kv in a.env:
        key, _, value = kv.partition("=")
        os.environ[key] = value
    floor_url, stop_floor = start_fast_sse()
    load0 = os.getloadavg()[0]
    try:
        with deployed_locally(scenario(a.time_scale, a.ingress_replicas, not a.no_direct)) as info:
            figs = asyncio.run(run_all(info.url, info.ingress_urls, floor_url, a.requests, a.tokens, a.time_scale))
    finally:
        stop_floor()
    print(f"{a.requests} sequential requests per path, 1 token (TTFT, CPU) then {a.tokens} tokens (per event); "
          f"time_scale {a.time_scale:g}; direct ingress {'off' if a.no_direct else 'on'}; "
          f"env {' '.join(a.env) or '(defaults)'}; "
          f"load average {load0:.2f} → {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    report(figs)


if __name__ == "__main__":
    main()
