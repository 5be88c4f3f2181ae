"""Where does a request's wall time and CPU time go on the live path?

Deploys a one-configuration scenario (simulated TP8 engine, `--time-scale` 0.1 by default: the engine
takes ~2 ms to the first token and ~1 ms per token, each token an SSE event of its own) on a local Ray
and sends sequential streaming requests (16-word prompt; 1 token, then `--tokens` tokens) along paths
that each add hops:

    floor     client → plain aiohttp SSE server in its own process (an HTTP exchange on this machine)
    health    client → Serve proxy → ingress `GET /health` (proxy and ingress, no model call)
    handle    driver → DeploymentHandle (gRPC, as the ingress calls it) → LLMServer.generate
    full      client → proxy → ingress → LLMServer → ingress → proxy → client
    … direct  the same without the proxy: the ingress replica's own HTTP server (server.direct_ingress,
              what `parallax run` and `DeployedApp.target` use)

For each: TTFT and E2E p50 / p99 (wall ms), the server's own TTFT, SSE events per long request, and
CPU ms per request and per extra event of each process (from /proc, less what it burns idle: the
client, the Serve proxy, the ingress replica, the LLMServer replica). Then the breakdown of the TTFT
of the path clients use, and the added TTFT (client TTFT - the server's own, which counts from the
ingress's receipt) through the proxy and directly.

    .venv/bin/python -m bench.path_cost [--requests 200] [--tokens 32] [--no-direct] [--env KEY=VALUE ...]

`--env` sets environment variables for the whole local cluster (e.g. one of Ray Serve's RAY_SERVE_*
flags), to compare settings within one machine state.
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
from deployments.app_args import APP_NAME, config_app_name, server_deployment_name
from deployments.deploy import deployed_locally
from deployments.resolve import Resolved, parse_scenario
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
         "replica": f"ray::ServeReplica:{config_app_name('tp8')}:{server_deployment_name('tp8')}"}


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
    events: float              # SSE events of a long request (median; the engine may coalesce tokens)
    cpu: dict[str, float]      # process role -> CPU ms per request, beyond what it burns when idle
    event_cpu: dict[str, float]  # process role -> CPU ms per extra token event


Result = tuple[float, float, dict, int]   # TTFT s, E2E s, the last usage, SSE events


async def _sse(session: aiohttp.ClientSession, method: str, url: str, body: Any) -> Result:
    """One request; TTFT = first data event."""
    t0 = time.perf_counter()
    first = None
    usage: dict = {}
    events = 0
    async with session.request(method, url, json=body, headers={"x-sla-class": "chat"}) as r:
        r.raise_for_status()
        async for line in r.content:
            if first is None:
                first = time.perf_counter()
            events += line.startswith(b"data: ")
            if line.startswith(b"data: {") and b'"usage"' in line:
                usage = json.loads(line[6:]).get("usage") or {}
    end = time.perf_counter()
    return (first or end) - t0, end - t0, usage, events


async def measure(name: str, n: int, tokens: int, scale: float, one: Callable[[int], Awaitable[Result]]) -> Figures:
    """n requests of 1 token (TTFT, CPU per request) then n // 4 of `tokens` tokens (CPU per extra event)."""
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
    events = float(np.median([r[3] for r in long]))
    extra = max(events - float(np.median([r[3] for r in rows])), 1.0)
    roles = [role for role in after if role == "client" or procs.get(role)]
    per_request = {role: max(0.0, after[role] - before[role] - idle_rate[role] * (t2 - t1)) / n * 1e3
                   for role in roles}
    per_long = {role: max(0.0, end[role] - after[role] - idle_rate[role] * (t3 - t2)) / len(long) * 1e3
                for role in roles}
    event_cpu = {role: (per_long[role] - per_request[role]) / extra for role in roles}
    return Figures(name, ttft, e2e, server, added, events, per_request, event_cpu)


def _job(tokens: int) -> Job:
    return Job(request_id=f"cmpl-{uuid.uuid4().hex}", kind="completion", model="tp8", prompt=PROMPT,
               max_tokens=tokens, min_tokens=tokens, temperature=0.0, ignore_eos=True, sla_class="chat",
               include_usage=True, arrival_wall=time.time())


async def run_all(url: str, direct: list[str], floor_url: str, n: int, tokens: int, scale: float) -> list[Figures]:
    body = {"model": "tp8", "prompt": PROMPT, "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True}
    handle = serve.get_deployment_handle(server_deployment_name("tp8"), app_name=config_app_name("tp8")).options(
        stream=True, _by_reference=False)   # as the ingress calls it

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def floor(k: int) -> Result:
            return await _sse(s, "POST", floor_url + "/v1/completions", body | {"max_tokens": k})

        async def health(_: int) -> Result:
            return await _sse(s, "GET", url + "/health", None)

        async def via_handle(k: int) -> Result:
            t0 = time.perf_counter()
            first = None
            usage: dict = {}
            events = 0
            async for item in handle.generate.remote(_job(k)):
                if isinstance(item, str):
                    first = first or time.perf_counter()
                    events += 1
                    if '"usage"' in item:
                        usage = json.loads(item[6:])["usage"]
            end = time.perf_counter()
            return (first or end) - t0, end - t0, usage, events

        async def full(k: int) -> Result:
            return await _sse(s, "POST", url + "/v1/completions", body | {"max_tokens": k})

        out = [await measure("floor (aiohttp)", n, tokens, scale, floor)]
        out.append(await measure("health (proxy+ingress)", n, tokens, scale, health))
        out.append(await measure("handle → replica", n, tokens, scale, via_handle))
        out.append(await measure("full path", n, tokens, scale, full))
        for d in direct[:1]:
            async def direct_full(k: int, d: str = d) -> Result:
                return await _sse(s, "POST", d + "/v1/completions", body | {"max_tokens": k})

            async def direct_health(_: int, d: str = d) -> Result:
                return await _sse(s, "GET", d + "/health", None)
            out.append(await measure("health, direct ingress", n, tokens, scale, direct_health))
            out.append(await measure("full, direct ingress", n, tokens, scale, direct_full))
        return out


def report(figs: list[Figures]) -> None:
    roles = ["client", "proxy", "ingress", "replica"]
    print(f"{'path':24} {'TTFT p50':>8} {'p99':>6} {'E2E p50':>8} {'srv TTFT':>8} {'events':>6}   "
          + "  ".join(f"{r:>7}" for r in roles) + "   (CPU ms per request)")
    for f in figs:
        srv = f"{np.median(f.server_ttft):8.2f}" if len(f.server_ttft) else f"{'-':>8}"
        cpus = "  ".join(f"{f.cpu[r]:7.2f}" if r in f.cpu else f"{'-':>7}" for r in roles)
        print(f"{f.name:24} {np.median(f.ttft):8.2f} {np.percentile(f.ttft, 99):6.2f} {np.median(f.e2e):8.2f} "
              f"{srv} {f.events:6.0f}   {cpus}")
    floor, health, handle, full = figs[:4]
    direct = len(figs) > 4
    path, trivial = (figs[5], figs[4]) if direct else (full, health)
    print(f"\nbreakdown of the TTFT of the path clients use ({path.name}; wall ms, medians):")
    parts = [
        ("HTTP exchange (client, socket, a server's loop)", np.median(floor.ttft)),
        ("ingress app, trivial route (GET /health)" if direct else "Serve proxy + ingress, trivial route (GET /health)",
         np.median(trivial.ttft) - np.median(floor.ttft)),
        ("hop in to the replica + admission + engine (handle's server TTFT)", np.median(handle.server_ttft)),
        ("first event back from the replica to its caller", np.median(handle.ttft) - np.median(handle.server_ttft)),
    ]
    rest = np.median(path.ttft) - sum(p for _, p in parts)
    for label, ms in [*parts, ("the ingress's completion work + relaying the event (rest)", rest)]:
        print(f"  {label:66} {ms:6.2f}")
    print(f"  {path.name + ' TTFT':66} {np.median(path.ttft):6.2f}")
    if direct:
        print(f"  {'(Serve proxy in front of the ingress: full path - full, direct ingress)':66} "
              f"{np.median(full.ttft) - np.median(path.ttft):6.2f}")
    print("CPU ms per extra SSE event, per process:")
    for f in figs:
        if f is not trivial and f is not health:
            print(f"  {f.name:24} " + "  ".join(f"{r} {f.event_cpu[r]:.3f}" for r in roles if r in f.event_cpu))
    for f in [full, *figs[5:6]]:
        print(f"added TTFT (client TTFT - server TTFT), {f.name}: p50 {np.percentile(f.added, 50):.2f} ms, "
              f"p99 {np.percentile(f.added, 99):.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--time-scale", type=float, default=0.1,
                    help="the simulated clock: slow enough that each token is an event of its own")
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
