"""The serving layer on a real local Ray (24 logical GPUs): one cluster and one deployment for the module."""

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import ray
import yaml
from ray import serve

from deployments.app_args import config_app_name, replica_name_prefix, server_deployment_name
from deployments.cluster import CapacityError, check_capacity, start_local_ray
from deployments.deploy import DeployedApp, DeployError, deploy, ingress_handle, teardown, wait_ready
from deployments.progress import ConfigProgress
from deployments.resolve import Resolved, load_scenario
from loadgen.records import read_records
from loadgen.runner import run_load
from loadgen.wire import REQUEST_ID_HEADER
from monitoring.ports import free_port
from schema.traffic import LoadConfig
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

KEY_ENV = "PARALLAX_ITEST_KEY"
KEY = "itest-secret-key"
CONFIGS = ["tp8", "tp4pp2", "pp8"]


def scenario_data(name: str = "itest", nodes: int = 3) -> dict[str, object]:
    return {
        "name": name,
        "model": "llama-3.1-70b",
        "dtype": "fp8",
        "hardware": {"gpu": "mi325x", "gpus_per_node": 8, "nodes": nodes},
        "engine": {"kind": "sim", "max_model_len": 2048},
        "configurations": [{"name": "tp8", "tp": 8}, {"name": "tp4pp2", "tp": 4, "pp": 2},
                           {"name": "pp8", "pp": 8}],
        "server": {"api_key_env": KEY_ENV, "max_ongoing_requests": 4, "max_queued_requests": 2},
        "classes": [
            {"name": "chat", "share": 0.5, "slo": {"ttft_ms": 450, "tpot_ms": 40},
             "input": {"kind": "fixed", "value": 16}, "output": {"kind": "fixed", "value": 8}},
            {"name": "summarize", "share": 0.5, "slo": {"ttft_ms": 2000, "tpot_ms": 200},
             "input": {"kind": "fixed", "value": 512}, "output": {"kind": "fixed", "value": 32}},
        ],
    }


@dataclass
class Served:
    resolved: Resolved
    info: DeployedApp
    metrics_port: int
    gcs: str
    folder: Path
    progress: list[list[ConfigProgress]]   # what deploy() reported while the configurations started


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    folder = Path(tempfile.mkdtemp(prefix="plx-it-"))
    path = folder / "itest.yaml"
    path.write_text(yaml.safe_dump(scenario_data()))
    r = load_scenario(path)
    os.environ[KEY_ENV] = KEY  # the replicas inherit it from the raylet
    metrics_port = free_port()
    try:
        gcs = start_local_ray(r, folder / "ray", metrics_port)
        progress: list[list[ConfigProgress]] = []
        info = deploy(r, port=free_port(), on_progress=progress.append)   # the scenario's wait: sim, 120 s
        yield Served(r, info, metrics_port, gcs, folder, progress)
    finally:
        try:
            teardown()
        finally:
            ray.shutdown()
            os.environ.pop(KEY_ENV, None)
            shutil.rmtree(folder, ignore_errors=True)


def test_deploy_reports_each_configuration_until_all_run(served: Served) -> None:
    first, last = served.progress[0], served.progress[-1]
    assert [p.name for p in first] == [p.name for p in last] == CONFIGS
    assert any(p.running < p.wanted for p in first)   # it started before they ran
    assert all(p.running == p.wanted == 1 and p.waiting_for == "" for p in last), [p.line() for p in last]
    assert all(a != b for a, b in zip(served.progress, served.progress[1:], strict=False))   # changes only


def client(s: Served) -> openai.OpenAI:
    """A client of the ingress replica's own address (direct ingress: the load generator's path)."""
    return openai.OpenAI(base_url=f"{s.info.target}/v1", api_key=KEY, max_retries=0, timeout=60)


def test_models_lists_each_configuration_and_auto(served: Served) -> None:
    ids = [m.id for m in client(served).models.list()]
    assert ids == [*CONFIGS, "auto"]
    assert len(served.info.ingress_urls) == 1 and served.info.target != served.info.url  # direct ingress
    assert httpx.get(f"{served.info.url}/health", timeout=30).json()["configurations"] == CONFIGS  # the proxy too


@pytest.mark.parametrize("model", [*CONFIGS, "auto"])
def test_openai_client_streams_completions_and_chat(served: Served, model: str) -> None:
    c = client(served)
    with c.completions.with_streaming_response.create(
            model=model, prompt="one two three four", max_tokens=6, stream=True,
            stream_options={"include_usage": True}, extra_headers={"x-sla-class": "summarize"},
            extra_body={"ignore_eos": True, "min_tokens": 6}) as resp:
        served_by = resp.headers["x-parallax-config"]
        assert resp.headers["x-sla-class"] == "summarize"
        chunks = list(resp.parse())
    assert served_by == model if model != "auto" else served_by in CONFIGS
    text_chunks = [ch for ch in chunks if ch.choices]
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert len("".join(ch.choices[0].text for ch in text_chunks).split()) == 6
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 6)

    with c.chat.completions.with_streaming_response.create(
            model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=5, stream=True) as resp:
        assert resp.headers["x-sla-class"] == "chat"  # the scenario's default class
        chat = [ch for ch in resp.parse() if ch.choices]
    assert chat[0].choices[0].delta.role == "assistant"
    assert len("".join(ch.choices[0].delta.content or "" for ch in chat).split()) == 5

    whole = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert whole.choices[0].finish_reason == "length" and whole.usage is not None
    assert whole.usage.completion_tokens == 3


def test_placement_groups_hold_tp_times_pp_bundles(served: Served) -> None:
    table = ray.util.placement_group_table()
    for cfg in CONFIGS:
        pgs = [pg for pg in table.values() if pg["name"].startswith(replica_name_prefix(cfg))
               and pg["state"] == "CREATED"]
        assert len(pgs) == 1, cfg
        bundles = list(pgs[0]["bundles"].values())
        assert pgs[0]["strategy"] == "STRICT_PACK"
        assert [b.get("GPU") for b in bundles] == [1.0] * 8
        assert len(set(pgs[0]["bundles_to_node_id"].values())) == 1
        reported = served.info.placements[cfg]
        assert len(reported) == 1 and len(reported[0].bundles) == 8


def _scrape_until(served: Served, wanted: list[str], deadline_s: float = 40) -> str:
    """Poll Ray's metrics port until every pattern in `wanted` matches: the text that matched them all."""
    seen = {"text": ""}

    def missing() -> list[str]:
        return [w for w in wanted if not re.search(w, seen["text"])]

    def scraped() -> bool:
        seen["text"] = httpx.get(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10).text
        return not missing()

    wait_until(scraped, deadline_s, lambda: f"Ray's metrics port to export {missing()}", 1)
    return seen["text"]


def test_metrics_port_exports_engine_and_server_metrics(served: Served) -> None:
    c = client(served)
    for cfg in CONFIGS:
        c.completions.create(model=cfg, prompt="a b c", max_tokens=4, extra_headers={"x-sla-class": "chat"})
    wanted = [f'ray_vllm_{name}{{.*config="{cfg}".*}}' for cfg in CONFIGS for name in (
        "time_to_first_token_seconds_bucket", "num_requests_running", "generation_tokens_total")]
    wanted += [r'ray_parallax_ttft_seconds_bucket\{.*config="tp4pp2".*pp="2".*sla_class="chat".*tp="4"',
               r'ray_parallax_(slo_met|slo_violated)_total\{.*config="pp8".*sla_class="chat"']
    # the traffic itself: arrivals and their prompt tokens (3 words: the simulated engine counts words), lengths
    wanted += [r'ray_parallax_arrivals_total\{.*config="tp8".*sla_class="chat".*\} [1-9]',
               r'ray_parallax_prompt_tokens_total\{.*config="tp8".*sla_class="chat".*\} [1-9]',
               r'ray_parallax_request_prompt_tokens_bucket\{.*config="tp8".*le="3.0".*sla_class="chat".*\} [1-9]',
               r'ray_parallax_request_output_tokens_bucket\{.*config="tp8".*le="4.0".*sla_class="chat".*\} [1-9]']
    text = _scrape_until(served, wanted)
    line = next(ln for ln in text.splitlines() if ln.startswith("ray_vllm_time_to_first_token_seconds_count")
                and 'config="tp8"' in ln)
    for label in ('model_name="tp8"', 'tp="8"', 'pp="1"', 'engine="sim"'):
        assert label in line


def test_every_class_counter_is_exported_at_zero_before_its_first_request(served: Served) -> None:
    """Prometheus' rate() takes a series' first sample as its baseline: a failure counter born at 1 would
    hide the first failures of a pair. Each replica exports its per-class counters at 0 from the start."""
    # (nothing in this module aborts a request on tp4pp2)
    wanted = [rf'ray_parallax_requests_total\{{.*config="tp4pp2".*sla_class="{k}".*status="aborted".*\}} 0\.0'
              for k in ("chat", "summarize")]
    _scrape_until(served, wanted)


def _post(s: Served, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    h = {"authorization": f"Bearer {KEY}", "content-type": "application/json", **(headers or {})}
    return httpx.post(f"{s.info.target}{path}", content=content, headers=h, timeout=30)


@pytest.mark.parametrize(("path", "body", "headers", "status", "param"), [
    ("/v1/completions", b'{"model": "tp8", "prompt": ', {}, 400, None),
    ("/v1/completions", b'{"model": "tp99", "prompt": "x"}', {}, 404, "model"),
    ("/v1/completions", b'{"model": "tp8", "prompt": "x", "max_tokens": -3}', {}, 400, "max_tokens"),
    ("/v1/completions", b'{"model": "pp8", "prompt": "' + b"w " * 2100 + b'"}', {}, 400, "prompt"),
    ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}',
     {"x-sla-class": "batch"}, 400, "x-sla-class"),
    ("/v1/completions", b'{"model": "tp8", "prompt": "x"}', {"authorization": "Bearer wrong"}, 401, None),
    ("/v1/completions", b'{"model": "tp8", "prompt": "x"}', {"x-request-id": "two words"}, 400, "x-request-id"),
    ("/v1/completions", b"[" * 5000 + b"]" * 5000, {}, 400, None),
    ("/v1/completions", b'{"model": "tp8", "prompt": "x", "stop": [["a"]]}', {}, 400, "stop"),
])
def test_bad_requests_get_openai_errors(served: Served, path: str, body: bytes, headers: dict[str, str],
                                        status: int, param: str | None) -> None:
    r = _post(served, path, body, headers)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param


def _logged(s: Served, config: str, text: str) -> bool:
    """Whether a log file of one of `config`'s replicas names `text`."""
    logs = s.folder / "ray" / "session_latest" / "logs" / "serve"
    pattern = f"replica_{config_app_name(config)}_{server_deployment_name(config)}_*.log"
    return any(text in f.read_text(errors="replace") for f in logs.glob(pattern))


def test_the_clients_request_id_is_kept_end_to_end(served: Served, tmp_path: Path) -> None:
    """x-request-id names the response (`cmpl-<id>`, echoed header) and the log line of the replica that
    served it; the load generator's records carry it, so records join to server logs."""
    body = {"model": "tp8", "prompt": "x", "max_tokens": 3, "stream": True}
    auth = {"authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{served.info.url}/v1/completions", json=body, timeout=30,
                      headers={**auth, REQUEST_ID_HEADER: "itest-trace-1"}) as r:
        assert r.status_code == 200 and r.headers[REQUEST_ID_HEADER] == "itest-trace-1"
        events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    assert events and {e["id"] for e in events} == {"cmpl-itest-trace-1"}
    chat = client(served).chat.completions.with_raw_response.create(
        model="tp8", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
        extra_headers={REQUEST_ID_HEADER: "itest-trace-2"})
    assert chat.parse().id == "chatcmpl-itest-trace-2"
    anonymous = client(served).completions.with_raw_response.create(model="tp8", prompt="x", max_tokens=1)
    assert anonymous.parse().id == f"cmpl-{anonymous.headers[REQUEST_ID_HEADER]}"   # one made up, and echoed

    load = LoadConfig(arrival={"kind": "constant", "rate": 4.0}, duration_s=1.0)
    asyncio.run(run_load(served.info.url, [served.resolved.scenario.classes[0]], load, tmp_path, model="tp8",
                         api_key=KEY))
    ids = [rec.request_id for rec in read_records(tmp_path) if rec.status == "ok"]
    assert len(ids) >= 3
    wait_until(lambda: all(_logged(served, "tp8", f"request {i} ")
                           for i in [*ids, "itest-trace-1"]), 30, f"tp8's log to name requests {ids}", 1)


def test_replicas_survive_bad_requests(served: Served) -> None:
    for _ in range(3):
        _post(served, "/v1/completions", b'{"model": "pp8", "prompt": "' + b"w " * 2100 + b'"}')
    ok = client(served).completions.create(model="pp8", prompt="still alive", max_tokens=2)
    assert ok.usage is not None and ok.usage.completion_tokens == 2
    app = serve.status().applications["parallax"]
    assert app.status == "RUNNING"
    assert all(d.status == "HEALTHY" for d in app.deployments.values())


def test_routing_weights_change_at_runtime(served: Served) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    r = httpx.put(f"{served.info.url}/v1/routing", json={"weights": {"chat": {"pp8": 1}}}, headers=auth)
    assert r.status_code == 200 and r.json()["weights"]["chat"] == {"pp8": 1.0}
    c = client(served)

    def served_by(model: str) -> str:
        raw = c.completions.with_raw_response.create(model=model, prompt="x", max_tokens=1,
                                                     extra_headers={"x-sla-class": "chat"})
        return raw.headers["x-parallax-config"]

    assert {served_by("auto") for _ in range(3)} == {"pp8"}
    assert served_by("llama-3.1-70b") == "pp8"  # the base model name routes like auto
    ingress_handle().set_routing.remote({"chat": {"tp8": 1, "tp4pp2": 1}}).result()
    assert {served_by("auto") for _ in range(4)} == {"tp8", "tp4pp2"}
    got = httpx.get(f"{served.info.target}/v1/routing", headers=auth).json()
    assert got["weights"]["chat"] == {"tp8": 1.0, "tp4pp2": 1.0}
    bad = httpx.put(f"{served.info.url}/v1/routing", json={"weights": {"chat": {"tp8": -1}}}, headers=auth)
    assert bad.status_code == 400 and "weight must be" in bad.json()["error"]["message"]


def test_overload_beyond_max_ongoing_gets_503(served: Served) -> None:
    async def one(http: httpx.AsyncClient, admitted: asyncio.Event | None = None) -> int:
        # ~10 s each on tp8: no request can finish (and free its slot) before the burst is all sent
        body = {"model": "tp8", "prompt": "x y z", "max_tokens": 1200, "stream": True}
        async with http.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code == 200:
                async for _ in r.aiter_lines():
                    if admitted is not None:
                        admitted.set()   # streaming: the replica holds it
            else:
                await r.aread()
                assert r.json()["error"]["code"] == "overloaded"
            return r.status_code

    async def fill_then_burst() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(base_url=served.info.target, timeout=120,
                                     headers={"authorization": f"Bearer {KEY}"}) as http:
            first = []
            for _ in range(4):   # one after the other: a burst of even 4 can outrun the router's queue of 2
                admitted = asyncio.Event()
                first.append(asyncio.create_task(one(http, admitted)))
                await asyncio.wait_for(admitted.wait(), 60)
            burst = await asyncio.gather(*(one(http) for _ in range(12)))
            return list(await asyncio.gather(*first)), list(burst)

    first, burst = asyncio.run(fill_then_burst())
    # 4 ongoing fill the replica; of the burst at most 2 wait at the ingress (max_queued_requests), the rest
    # are refused at once, not queued (Serve refuses more when the burst outruns its router's assignment)
    assert first == [200] * 4
    assert burst.count(200) <= 2 and burst.count(503) == 12 - burst.count(200)


def test_scenario_larger_than_the_cluster_fails_fast(served: Served) -> None:
    data = scenario_data("toobig", nodes=4)
    data["configurations"] = [*data["configurations"], {"name": "tp8b", "tp": 8}]  # type: ignore[list-item]
    path = served.folder / "toobig.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CapacityError, match=r"need 32 GPUs .* but the cluster has 0 available"):
        check_capacity(load_scenario(path))
    with pytest.raises(CapacityError, match=r"need 32 GPUs .* but the cluster has 24 available"):
        deploy(load_scenario(path), port=free_port())  # the running app's 24 GPUs would be freed, still short
    with pytest.raises(DeployError, match="already runs"):
        deploy(served.resolved, port=free_port())
    env = {**os.environ, "RAY_ADDRESS": served.gcs, "PARALLAX_STATE_DIR": str(served.folder / "state")}
    t0 = time.monotonic()
    cli = subprocess.run([sys.executable, "-m", "controllers.cli.app", "up", str(path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    assert "need 32 GPUs" in cli.stderr and "Traceback" not in cli.stderr + cli.stdout
    assert time.monotonic() - t0 < 60
    assert serve.status().applications["parallax"].status == "RUNNING"  # the running app was left alone


def test_a_deployment_stuck_pending_times_out_clearly(served: Served) -> None:
    @serve.deployment(placement_group_bundles=[{"CPU": 0.01, "GPU": 1}], ray_actor_options={"num_cpus": 0.01},
                      graceful_shutdown_timeout_s=1)
    class NeedsAGpu:
        def __call__(self) -> str:
            return "never"

    serve.run_many([serve.RunTarget(NeedsAGpu.bind(), name="stuck", route_prefix="/stuck")],
                   wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    with pytest.raises(DeployError, match=r"stuck was not ready after 3 s.*NeedsAGpu"):
        wait_ready(served.resolved, 3.0, app_name="stuck")
    wait_until(lambda: "stuck" not in serve.status().applications, 30, "Serve to delete the stuck application", 0.5)


def test_a_client_that_goes_away_aborts_its_request(served: Served) -> None:
    body = {"model": "pp8", "prompt": "x", "max_tokens": 1500, "stream": True}
    with httpx.stream("POST", f"{served.info.target}/v1/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {KEY}", "x-sla-class": "summarize"}) as r:
        assert r.status_code == 200
        next(line for line in r.iter_lines() if line.startswith("data: {"))
    # the engine drops the request: it shows as aborted and pp8's batch empties long before 1500 tokens
    aborted = r'ray_parallax_requests_total\{.*config="pp8".*sla_class="summarize".*status="aborted".*\} 1\.0'
    running = r'ray_vllm_num_requests_running\{.*config="pp8".*\} 0\.0'
    _scrape_until(served, [aborted, running], 30)
