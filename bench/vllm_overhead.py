"""The testbed's serving overhead over vLLM's own OpenAI server, for the same engine configuration.

The same closed-loop load (the load generator, streaming completions) is sent first to
`python -m vllm.entrypoints.openai.api_server`, then to the testbed's ingress (Ray Serve: ingress →
LLMServer → the same AsyncLLM), with identical engine arguments (deployments/engines/vllm/args.py).
Prints client-side TTFT / TPOT / E2E percentiles and throughput for both, and their difference.
With `--repeat N` the two alternate N times and the last lines give each pair's ratios and their
median: on a noisy machine compare within a pair.

    python bench/vllm_overhead.py --config tp1 --concurrency 2 --duration 20 [--repeat 3]

Runs one engine at a time (the tiny model from `parallax tiny-model .cache/tiny-llama`).
"""

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import ray
import yaml
from ray import serve

from deployments.cluster import start_local_ray
from deployments.deploy import deploy
from deployments.engines.vllm.args import launch_for
from deployments.engines.vllm.cleanup import remove_leftovers, snapshot_leftovers
from deployments.engines.vllm.tiny_model import write_tiny_model
from deployments.resolve import Resolved, parse_scenario
from loadgen.records import RequestRecord, read_records
from loadgen.runner import run_load
from monitoring.ports import free_port
from schema.traffic import SLO, ClosedLoop, FixedLength, LoadConfig, TrafficClass

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "cpu-vllm-tiny.yaml"
TINY = REPO / ".cache" / "tiny-llama"


def resolved(config: str, port: int, stream_interval_ms: float | None = None) -> Resolved:
    data = yaml.safe_load(SCENARIO.read_text())
    data["configurations"] = [c for c in data["configurations"] if c["name"] == config]
    data["server"] = {"port": port, "metrics_port": free_port()}
    if stream_interval_ms is not None:
        data["engine"]["stream_interval_ms"] = stream_interval_ms
    return parse_scenario(data, str(SCENARIO), SCENARIO.parent)


def server_argv(r: Resolved, port: int) -> tuple[list[str], dict[str, str]]:
    """vLLM's own server with exactly the engine arguments the testbed's engine uses."""
    launch = launch_for(r.scenario, r.scenario.configurations[0], "cpu")
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port)]
    for key, value in launch.engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else ([f"--no-{flag[2:]}"] if key == "enforce_eager" else [])
        else:
            argv += [flag, str(value)]
    return argv, launch.env


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"vLLM's server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout_s:g} s")


def load(target: str, model: str, out: Path, concurrency: int, duration_s: float) -> list[RequestRecord]:
    cls = TrafficClass(name="chat", share=1.0, slo=SLO(ttft_ms=500),
                       input=FixedLength(value=128), output=FixedLength(value=32))
    warm = LoadConfig(arrival=ClosedLoop(concurrency=1), duration_s=3, timeout_s=60)
    asyncio.run(run_load(target, [cls], warm, out / "warm", model=model, tokenizer=TINY))
    cfg = LoadConfig(arrival=ClosedLoop(concurrency=concurrency), duration_s=duration_s, timeout_s=60)
    asyncio.run(run_load(target, [cls], cfg, out / "run", model=model, tokenizer=TINY))
    return read_records(out / "run" / "records.jsonl")


def against_vllm(r: Resolved, out: Path, concurrency: int, duration_s: float) -> list[RequestRecord]:
    port = free_port()
    argv, env = server_argv(r, port)
    before = snapshot_leftovers()
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=(out / "vllm.log").open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", 300, proc)
        return load(f"http://127.0.0.1:{port}", r.scenario.configurations[0].name, out / "vllm", concurrency,
                    duration_s)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        remove_leftovers(before)


def against_testbed(r: Resolved, out: Path, concurrency: int, duration_s: float) -> list[RequestRecord]:
    temp = Path(tempfile.mkdtemp(prefix="pxb"))
    try:
        start_local_ray(r, temp)
        d = deploy(r, timeout_s=400)
        return load(d.target, r.scenario.configurations[0].name, out / "testbed", concurrency, duration_s)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def figures(records: list[RequestRecord], duration_s: float) -> dict[str, float]:
    ok = [x for x in records if x.status == "ok"]

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) * 1000 if values else float("nan")

    ttft = [x.ttft_s for x in ok if x.ttft_s is not None]
    tpot = [x.tpot_s for x in ok if x.tpot_s is not None]
    e2e = [x.e2e_s for x in ok if x.e2e_s is not None]
    return {"requests ok": len(ok), "errors": len(records) - len(ok), "req/s": len(ok) / duration_s,
            "out tok/s": sum(x.output_tokens for x in ok) / duration_s,
            "TTFT p50 ms": pct(ttft, 50), "TTFT p90 ms": pct(ttft, 90), "TPOT p50 ms": pct(tpot, 50),
            "TPOT p90 ms": pct(tpot, 90), "E2E p50 ms": pct(e2e, 50), "E2E p90 ms": pct(e2e, 90)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tp1", choices=["tp1", "tp2", "pp2"])
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two this many times")
    ap.add_argument("--out", type=Path, default=None, help="keep the records here (default: a temp folder)")
    ap.add_argument("--stream-interval-ms", type=float, default=None,
                    help="the testbed's engine.stream_interval_ms (default: the scenario's; vLLM's own server "
                         "sends every token)")
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CACHE_ROOT", str(REPO / ".cache" / "vllm"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO / ".cache" / "inductor"))
    write_tiny_model(TINY)
    out = a.out or Path(tempfile.mkdtemp(prefix="pxbench"))
    out.mkdir(parents=True, exist_ok=True)
    r = resolved(a.config, free_port(), a.stream_interval_ms)
    pairs = []
    for i in range(a.repeat):
        load0 = os.getloadavg()[0]
        folder = out / str(i) if a.repeat > 1 else out
        folder.mkdir(parents=True, exist_ok=True)
        own = figures(against_vllm(r, folder, a.concurrency, a.duration), a.duration)
        bed = figures(against_testbed(r, folder, a.concurrency, a.duration), a.duration)
        pairs.append((own, bed))
        print(f"\n{a.config}, run {i + 1} of {a.repeat}: closed loop, concurrency {a.concurrency}, {a.duration:g} s, "
              f"128 in / 32 out tokens, streaming completions; testbed stream_interval_ms "
              f"{r.scenario.engine.stream_interval_ms:g}; load average "
              f"{load0:.2f} → {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (records in {folder})")
        print(f"{'':14}{'vLLM server':>14}{'testbed':>14}{'difference':>14}")
        for key in own:
            print(f"{key:14}{own[key]:>14.2f}{bed[key]:>14.2f}{bed[key] - own[key]:>+14.2f}")
    if a.repeat > 1:
        print("\ntestbed / vLLM server, per pair and median:")
        for key in ("req/s", "TTFT p50 ms", "TPOT p50 ms"):
            ratios = [bed[key] / own[key] - 1 for own, bed in pairs]
            each = "  ".join(f"{x:+.1%}" for x in ratios)
            print(f"{key:14}{each}   median {float(np.median(ratios)):+.1%}")


if __name__ == "__main__":
    main()
