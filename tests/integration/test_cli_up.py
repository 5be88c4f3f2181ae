"""`parallax up / status / down` end to end: a detached local Ray, the OpenAI API, then nothing left."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from monitoring.ports import free_port

pytestmark = pytest.mark.integration


SCENARIO = {
    "name": "cli-small",
    "model": "llama-3.1-8b",
    "dtype": "bf16",
    "hardware": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
    "engine": {"kind": "sim", "stream_interval_ms": 20},
    "configurations": [{"name": "tp4", "tp": 4}, {"name": "tp2x2", "tp": 2, "replicas": 2}],
    "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 500},
                 "input": {"kind": "fixed", "value": 8}, "output": {"kind": "fixed", "value": 8}}],
}


def parallax(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controllers.cli.app", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_up_status_down_leaves_nothing_running(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PARALLAX_STATE_DIR"] = str(state_dir)
    port, metrics_port = free_port(), free_port()
    up = parallax("up", str(path), "--port", str(port), "--metrics-port", str(metrics_port), env=env)
    state: dict[str, object] = {}
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert f"http://127.0.0.1:{port}" in up.stdout and "STRICT_PACK" in up.stdout
        assert "waiting up to 120 s" in up.stdout   # the simulator's default server.deploy_timeout_s
        assert "tp2x2: " in up.stdout and "/2 running" in up.stdout   # progress, read from the daemon's state
        state = json.loads((state_dir / "cli-small.json").read_text())

        st = parallax("status", "--json", env=env, timeout=60)
        assert st.returncode == 0, st.stderr
        [entry] = json.loads(st.stdout)
        assert entry["process_alive"] and entry["health"]["configurations"] == ["tp4", "tp2x2"]
        assert [len(p["bundles"]) for p in entry["placements"]["tp2x2"]] == [2, 2]
        assert [len(p["bundles"]) for p in entry["placements"]["tp4"]] == [4]

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        with client.chat.completions.with_streaming_response.create(
                model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True,
                stream_options={"include_usage": True}) as resp:
            assert resp.headers["x-parallax-config"] in ("tp4", "tp2x2")
            chunks = list(resp.parse())
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
        extra = chunks[-1].usage.model_extra or {}
        assert extra["parallax_stream_interval_ms"] == 20.0
        assert extra["parallax_server_ttft_ms"] > 0 and extra["parallax_server_tpot_ms"] > 0
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert metrics.status_code == 200 and "\nray_" in metrics.text  # Ray's own exporter
    finally:
        down = parallax("down", "--all", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "cli-small is down" in down.stdout
    pid = state.get("pid")
    assert isinstance(pid, int)
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    assert not Path(str(state["temp_dir"])).exists()
    assert list(state_dir.iterdir()) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
    assert "nothing is up" in parallax("down", "--all", env=env, timeout=60).stdout


def test_up_with_a_bad_scenario_says_why(tmp_path: Path) -> None:
    bad = {**SCENARIO, "configurations": [{"name": "tp16", "tp": 16}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    env = {**os.environ, "PARALLAX_STATE_DIR": str(tmp_path / "state")}
    r = parallax("up", str(path), env=env, timeout=60)
    assert r.returncode == 2
    assert "configurations[0].tp" in r.stderr and "Traceback" not in r.stderr


def test_up_on_a_busy_port_fails_fast_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PARALLAX_STATE_DIR"] = str(state_dir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = parallax("up", str(path), "--port", str(port), "--metrics-port", str(free_port()), env=env, timeout=120)
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
    assert list(state_dir.iterdir()) == []
