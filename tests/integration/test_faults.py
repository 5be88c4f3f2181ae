"""Faults with the load running, on one real stack per module: local Ray + the Serve app (sim engine) +
Prometheus + the controller + the load generator, with an API key on the ingress.

- an engine replica killed mid-run: Serve replaces it, every request has exactly one record, the
  controller drains the configuration while it has no running replica and restores it after;
- Prometheus stopped and restarted: the controller marks its data stale, keeps the last routing, recovers;
- the load generator interrupted (SIGINT, SIGTERM): the records written so far are complete and flushed;
- malformed requests (hypothesis): never a 5xx, no replica dies;
- access: 127.0.0.1 only, the API key enforced and never written to logs or the run folder.

Figures (sent vs recorded, recovery times) are printed with the prefix FIGURE.
"""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ray import serve

from controllers.controller import Controller, prom_query
from controllers.router_client import HttpRouter
from controllers.scoreboard import scoreboard_rules
from deployments.app_args import APP_NAME, replica_name_prefix
from deployments.cluster import start_local_ray
from deployments.deploy import deploy, teardown
from deployments.health import unhealthy_configs
from deployments.listening import listening_on
from deployments.resolve import Resolved, load_scenario
from loadgen.plan import Workload, build_plan
from loadgen.records import META_FILE, RECORDS_FILE, SUMMARY_FILE, read_records
from loadgen.runner import run_load
from monitoring.prometheus import PrometheusHandle, ScrapeTarget, start_prometheus, stop_prometheus
from monitoring.promql import PromClient
from tests.integration.ray_cluster import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

KEY_ENV = "PARALLAX_FAULTS_KEY"
SECRET = "sk-parallax-fault-test-3b9d0c7e41f2a685"
SCENARIO: dict[str, Any] = {
    "name": "faults",
    "model": "llama-3.1-8b",
    "dtype": "bf16",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 1},
    "engine": {"kind": "sim", "max_num_seqs": 64, "stream_interval_ms": 50},
    "configurations": [{"name": "a", "tp": 1}, {"name": "b", "tp": 2}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 2000, "tpot_ms": 200},
                 "input": {"kind": "uniform", "min": 20, "max": 200},
                 "output": {"kind": "uniform", "min": 10, "max": 40}}],
    "load": {"arrival": {"kind": "poisson", "rate": 6}, "duration_s": 12, "timeout_s": 30},
    "controller": {"policy": "best-per-class", "interval_s": 0.25, "window_s": 10, "min_samples": 5,
                   "min_dwell_s": 1},
    "server": {"api_key_env": KEY_ENV},
    "monitoring": {"scrape_interval_s": 0.5},   # the recording rules the controller reads are evaluated as often
}


SIDE_JOIN_S = 240  # what runs alongside a load may outlast it: each of its waits has its own deadline


def figure(name: str, **values: object) -> None:
    print(f"\nFIGURE {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


@dataclass
class Stack:
    resolved: Resolved
    run_dir: Path
    ray_dir: Path
    url: str
    ray_metrics_port: int
    prom: PrometheusHandle
    controller: Controller
    router: HttpRouter

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {SECRET}", "x-sla-class": "chat"}

    def routing(self) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/v1/routing", headers=self.headers, timeout=10)
        r.raise_for_status()
        return dict(r.json()["weights"])

    def load_once(self, out: Path, duration_s: float,
                  during: Callable[[float], None] | None = None) -> tuple[list[str], list[Any], float]:
        """Run the scenario's load for `duration_s`; `during(t0)` runs alongside. Planned ids, records, t0."""
        s = self.resolved.scenario
        load = s.load.model_copy(update={"duration_s": duration_s})
        planned = [p.request_id for step in build_plan(list(s.classes), load, Workload(list(s.classes)))
                   for p in step.requests]
        t0 = time.time()
        failed: list[BaseException] = []

        def side_job() -> None:
            assert during is not None
            try:
                during(t0)
            except BaseException as e:  # surfaced below: a failure on the side is the test's failure
                failed.append(e)

        side = threading.Thread(target=side_job, daemon=True) if during else None
        if side:
            side.start()
        asyncio.run(run_load(self.url, list(s.classes), load, out, api_key=SECRET))
        if side:
            side.join(timeout=SIDE_JOIN_S)
            assert not side.is_alive(), f"what ran alongside the load was still running {SIDE_JOIN_S} s after it"
            if failed:
                raise failed[0]
        return planned, read_records(out / RECORDS_FILE), t0


def _replica_actors(config: str) -> list[str]:
    prefix = replica_name_prefix(config)
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def _replica_actor(config: str) -> str:
    names = _replica_actors(config)
    assert len(names) == 1, names
    return names[0]


def _replicas() -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("faults")
    path = run_dir / "scenario.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    r = load_scenario(path)
    ray_dir = Path(tempfile.mkdtemp(prefix="pxflt", dir="/tmp"))  # short: Unix socket paths are limited
    metrics_port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, SECRET)  # the replicas inherit it from the Ray this process starts
        mp.setenv("RAY_metrics_report_interval_ms", "1000")  # fresh metrics for the controller
        mp.delenv("RAY_ADDRESS", raising=False)
        start_local_ray(r, ray_dir, metrics_port=metrics_port)
        prom: PrometheusHandle | None = None
        controller: Controller | None = None
        try:
            d = deploy(r, port=free_port(), timeout_s=180)
            prom = start_prometheus(run_dir, [ScrapeTarget("ray", metrics_port)], scoreboard_rules(r.scenario),
                                    scrape_interval_s=0.5)
            router = HttpRouter(d.url, api_key=SECRET)
            names = [c.name for c in r.scenario.configurations]
            client = PromClient(prom.url, timeout_s=2.0)
            controller = Controller(r.scenario, prom_query(client), router, folder=run_dir / "controller",
                                    health=lambda: unhealthy_configs(names))
            (run_dir / "controller").mkdir()
            controller.apply_initial()
            controller.start()
            stack = Stack(r, run_dir, ray_dir, d.url, metrics_port, prom, controller, router)
            yield stack
            prom = stack.prom  # the restart test replaces it: stop the one that runs now
        finally:
            if controller is not None:
                controller.stop()
            if prom is not None:
                stop_prometheus(prom)
            teardown()
            ray.shutdown()
            shutil.rmtree(ray_dir, ignore_errors=True)


def _check_records(planned: list[str], records: list[Any]) -> None:
    ids = [r.request_id for r in records]
    assert len(ids) == len(set(ids)), "a request recorded twice"
    assert set(ids) == set(planned), (f"{len(planned)} sent, {len(ids)} recorded; missing "
                                      f"{sorted(set(planned) - set(ids))[:5]}")


# --- bad input --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
FIELDS = ["model", "prompt", "messages", "max_tokens", "min_tokens", "stream", "temperature", "stream_options",
          "ignore_eos", "n", "stop", "top_p", "role", "content"]
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    st.fixed_dictionaries({"model": st.sampled_from(["auto", "a", "b", "nope", ""]),
                           "prompt": st.one_of(st.text(max_size=50), json_values),
                           "max_tokens": st.one_of(st.integers(-5, 10**7), json_values)},
                          optional={"stream": st.booleans(), "stream_options": json_values}),
    st.fixed_dictionaries({"model": st.just("auto"),
                           "messages": st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]),
                                                                json_values, max_size=3), max_size=3),
                           "max_tokens": st.integers(1, 8)},
                          optional={"stream": st.booleans()}),
    json_values,
)
raw_bodies = st.one_of(st.binary(max_size=64), st.sampled_from([b"{", b"[]", b"null", b'{"prompt": "x"',
                                                                 b"\xff\xfe", b'{"max_tokens": 1e999}']))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@example(path="/v1/completions", body={"model": "auto", "prompt": "", "max_tokens": 1}, sla=None)
@example(path="/v1/chat/completions", body={"model": "auto", "messages": [], "max_tokens": 1}, sla="chat")
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]), body=bodies,
       sla=st.one_of(st.none(), st.sampled_from(["chat", "", "nope", "x" * 300, "ch\u00e4t"])))
def test_malformed_json_requests_never_get_a_5xx(stack: Stack, path: str, body: object, sla: str | None) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"} | ({"x-sla-class": sla} if sla is not None else {})
    try:
        r = httpx.post(stack.url + path, json=body, headers=headers, timeout=30)
    except UnicodeEncodeError:
        return  # a header httpx itself cannot send
    assert r.status_code < 500, (r.status_code, r.text[:300])


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/routing", "/v1/models"]),
       body=raw_bodies, method=st.sampled_from(["POST", "PUT", "GET"]),
       ctype=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]),
       auth=st.sampled_from([None, "Bearer wrong", "Basic abc", f"Bearer {SECRET}", "Bearer " + "x" * 5000]))
def test_malformed_bytes_headers_and_methods_never_get_a_5xx(stack: Stack, path: str, body: bytes, method: str,
                                                             ctype: str, auth: str | None) -> None:
    headers = {"content-type": ctype} | ({"Authorization": auth} if auth else {})
    r = httpx.request(method, stack.url + path, content=body, headers=headers, timeout=30)
    assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
    if path != "/v1/models" and (auth != f"Bearer {SECRET}") and r.status_code != 405:
        assert r.status_code == 401, "every API route checks the key"


def test_no_replica_died_of_bad_input(stack: Stack) -> None:
    before = _replicas()
    assert httpx.get(f"{stack.url}/health", timeout=10).status_code == 200
    app = serve.status().applications[APP_NAME]
    assert all(d.status.value == "HEALTHY" for d in app.deployments.values())
    r = httpx.post(f"{stack.url}/v1/completions", json={"model": "auto", "prompt": "hi", "max_tokens": 4},
                   headers=stack.headers, timeout=30)
    assert r.status_code == 200
    assert _replicas() == before


# --- faults under load ------------------------------------------------------------------------

def test_killed_replica_is_replaced_drained_and_restored(stack: Stack) -> None:
    """Each step is awaited with its own deadline (under load the replacement may come after the load
    window); how long each took is printed."""
    killed = _replica_actor("a")
    marks: dict[str, float] = {}

    def replaced() -> bool:
        return not unhealthy_configs(["a"]) and _replica_actors("a") not in ([], [killed])

    def kill_then_watch(t0: float) -> None:
        time.sleep(3.0)  # the kill lands mid-load
        marks["kill"] = time.time()
        ray.kill(ray.get_actor(killed, namespace="serve"), no_restart=True)
        marks["noticed"] = marks["kill"] + wait_until(lambda: "a" in unhealthy_configs(["a"]), 30,
                                                      "Serve to notice the dead replica of a", 0.05)
        marks["replaced"] = marks["kill"] + wait_until(replaced, 180, "Serve to replace a's replica", 0.1)

    planned, records, _ = stack.load_once(stack.run_dir / "load-kill", 12.0, kill_then_watch)
    _check_records(planned, records)

    def health_decision(verb: str, since: float) -> float | None:
        return next((d.time for d in stack.controller.decisions
                     if d.policy == "health" and f"{verb} a" in d.reason and d.time >= since), None)

    wait_until(lambda: health_decision("drained", marks["kill"]), 30, "the controller to drain a")
    drained = health_decision("drained", marks["kill"])
    assert drained is not None
    wait_until(lambda: health_decision("restored", drained), 60, "the controller to restore a")
    restored = health_decision("restored", drained)
    assert restored is not None
    wait_until(lambda: not stack.controller.down, 10, "the controller to see a healthy again")
    assert all(ws["a"] > 0 for ws in stack.routing().values()), "a is back in the routing"
    after = [r for r in records if r.config == "a" and r.status == "ok" and r.send_time
             and r.send_time > marks["replaced"]]
    errors = [r for r in records if r.status != "ok"]
    figure("replica-kill", sent=len(planned), recorded=len(records), errors=len(errors),
           serve_noticed_s=round(marks["noticed"] - marks["kill"], 2),
           replaced_s=round(marks["replaced"] - marks["kill"], 2),
           drained_after_s=round(drained - marks["kill"], 2), restored_after_s=round(restored - marks["kill"], 2),
           restored_after_replaced_s=round(restored - marks["replaced"], 2),
           ok_on_a_after_replacement=len(after))
    assert _replica_actor("a") != killed


def test_prometheus_restart_marks_stale_keeps_routing_and_recovers(stack: Stack) -> None:
    marks: dict[str, float] = {}
    seen: dict[str, Any] = {}

    def outage(t0: float) -> None:
        wait_until(lambda: not stack.controller.board.stale, 40, "fresh data before the outage", 0.1)
        marks["stop"] = time.time()
        stop_prometheus(stack.prom)
        marks["stale"] = marks["stop"] + wait_until(lambda: stack.controller.board.stale, 10, "stale", 0.05)
        seen["at_stale"] = stack.routing()
        time.sleep(3.0)
        seen["during"] = stack.routing()
        marks["restart"] = time.time()
        stack.prom = start_prometheus(stack.run_dir, [ScrapeTarget("ray", stack.ray_metrics_port)],
                                      scoreboard_rules(stack.resolved.scenario), port=stack.prom.port,
                                      scrape_interval_s=0.5)
        marks["fresh"] = marks["restart"] + wait_until(lambda: not stack.controller.board.stale, 40, "recovery", 0.05)

    planned, records, _ = stack.load_once(stack.run_dir / "load-prom", 14.0, outage)
    _check_records(planned, records)
    assert seen["during"] == seen["at_stale"], "the routing in force must not change while data is stale"
    assert not [d for d in stack.controller.decisions if marks["stale"] < d.time < marks["restart"]]
    figure("prometheus-restart", sent=len(planned), recorded=len(records),
           errors=sum(r.status != "ok" for r in records), stale_after_s=round(marks["stale"] - marks["stop"], 2),
           outage_s=round(marks["restart"] - marks["stop"], 2),
           fresh_after_restart_s=round(marks["fresh"] - marks["restart"], 2))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_load_generator_flushes_every_record(stack: Stack, sig: signal.Signals) -> None:
    out = stack.run_dir / f"load-{sig.name}"
    scenario = stack.run_dir / "scenario.yaml"
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "controllers.cli.app", "load", "--target", stack.url, "--scenario",
                             str(scenario), "--duration", "30", "--out", str(out), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: (out / RECORDS_FILE).exists() and (out / RECORDS_FILE).stat().st_size > 0, 60,
              "first records")
        time.sleep(2.0)
        sent_at = time.time()
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (out / SUMMARY_FILE).exists(), output[-3000:]
    lines = (out / RECORDS_FILE).read_text().splitlines()
    records = [json.loads(ln) for ln in lines]  # every line complete
    summary = json.loads((out / SUMMARY_FILE).read_text())
    meta = json.loads((out / META_FILE).read_text())
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert summary["interrupted"] and meta["interrupted"], output[-2000:]
    assert summary["records"] == len(records)
    sent = [r for r in records if r["send_time"] is not None]
    # independent of the generator's own counts: what was recorded is exactly the plan's first requests
    load = stack.resolved.scenario.load.model_copy(update={"duration_s": 30.0})
    classes = list(stack.resolved.scenario.classes)
    planned = sorted((p.at_s, p.request_id) for step in build_plan(classes, load, Workload(classes))
                     for p in step.requests)
    assert set(ids) == {rid for _, rid in planned[:len(ids)]}, "a gap: a request was sent but not recorded"
    assert len(ids) < len(planned), "the run was cut short"
    assert all(r["status"] in ("ok", "error", "timeout", "cancelled") for r in records)
    assert proc.returncode == 130, output[-2000:]
    figure(f"loadgen-{sig.name}", sent=len(sent), recorded=len(records), summary_sent=summary["sent"],
           cancelled=sum(r["status"] == "cancelled" for r in records),
           exit_s=round(time.time() - sent_at, 2))
    assert summary["sent"] == len(sent)


# --- access -----------------------------------------------------------------------------------

def test_endpoints_bind_localhost_only(stack: Stack) -> None:
    ports = {"serve": int(stack.url.rsplit(":", 1)[1]), "prometheus": stack.prom.port,
             "ray metrics": stack.ray_metrics_port}
    for what, port in ports.items():
        assert listening_on(port) == [f"127.0.0.1:{port}"], f"{what} on {port}: {listening_on(port)}"


def test_api_key_is_enforced(stack: Stack) -> None:
    body = {"model": "auto", "prompt": "hi", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": SECRET},
                    {"Authorization": f"Bearer {SECRET}x"}, {"Authorization": f"Bearer {SECRET[:-1]}"}):
        r = httpx.post(f"{stack.url}/v1/completions", json=body, headers=headers, timeout=30)
        assert r.status_code == 401, headers
        assert SECRET not in r.text
    assert httpx.post(f"{stack.url}/v1/completions", json=body, headers=stack.headers, timeout=30).status_code == 200


def test_no_secret_in_logs_or_run_folder(stack: Stack) -> None:
    needle = SECRET.encode()
    scanned = 0
    for root in (stack.run_dir, stack.ray_dir):
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    assert needle not in p.read_bytes(), f"the API key leaked into {p}"
                    scanned += 1
    assert scanned > 20  # records, controller logs, Prometheus files, Ray's session logs
