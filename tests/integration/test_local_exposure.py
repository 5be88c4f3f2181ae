"""What a local `parallax up` exposes: every socket its processes listen on is loopback, or on the
allow-list and refuses a caller without Ray's token; `parallax status` shows the same addresses.

Probes go to 127.0.0.1 only (a socket bound to all interfaces answers there too)."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml

from deployments.daemon import UpState
from deployments.listening import ALL_INTERFACES_ALLOWED, listening_sockets, session_pids
from loadgen.exporter import ClientMetrics
from monitoring.ports import free_port
from monitoring.prometheus import start_prometheus, stop_prometheus

pytestmark = pytest.mark.integration


def _replica_grpc_code(port: int) -> grpc.StatusCode:
    """A call to a Serve replica's inter-deployment gRPC server with no token: its status code."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            call(b"", timeout=20)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


# How the test proves each allow-list entry refuses an unauthenticated caller (keyed like the list).
PROBES: dict[str, Callable[[int], grpc.StatusCode]] = {"ray::ServeReplica:": _replica_grpc_code}


def test_local_up_listens_on_loopback_only(tmp_path: Path) -> None:
    prom_port, loadgen_port = free_port(), free_port()
    scenario = {
        "name": "exposure",
        "model": "llama-3.1-8b",
        "hardware": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1},
        "configurations": [{"name": "tp1", "tp": 1, "replicas": 2}],
        "classes": [{"name": "chat", "share": 1.0, "slo": {"ttft_ms": 1000},
                     "input": {"kind": "fixed", "value": 8}, "output": {"kind": "fixed", "value": 4}}],
        "monitoring": {"prometheus_port": prom_port, "loadgen_metrics_port": loadgen_port},
    }
    path = tmp_path / "exposure.yaml"
    path.write_text(yaml.safe_dump(scenario))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PARALLAX_STATE_DIR"] = str(tmp_path / "state")
    cli = [sys.executable, "-m", "controllers.cli.app"]
    port, metrics_port = free_port(), free_port()
    up = subprocess.run([*cli, "up", str(path), "--port", str(port), "--metrics-port", str(metrics_port)],
                        env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        st = UpState.read(tmp_path / "state" / "exposure.json")
        assert st.pid is not None and st.ray_address is not None
        sockets = listening_sockets(session_pids(st.pid))
        processes = {s.name for s in sockets}

        # the measurement sees Ray's daemons and its workers (each leads a process group of its own)
        gcs_port = int(st.ray_address.rsplit(":", 1)[1])
        by_port = {s.port: s for s in sockets}
        assert {gcs_port, port, metrics_port} <= by_port.keys(), sorted(by_port)
        assert {"ray::ProxyActor", "ray::ServeReplica:parallax:ingress", "ray::ServeReplica:parallax-tp1:llm-tp1"} \
            <= processes, processes

        wide = [s for s in sockets if not s.loopback]
        unexpected = [f"{s.name} on {s.address}" for s in wide if s.allowance() is None]
        assert not unexpected, f"listening beyond loopback and not on the allow-list: {unexpected}"
        assert st.ray_address.startswith("127.0.0.1:")
        assert (by_port[port].address, by_port[metrics_port].address) == (f"127.0.0.1:{port}",
                                                                         f"127.0.0.1:{metrics_port}")
        for s in wide:
            allowed = s.allowance()
            assert allowed is not None
            code = PROBES[allowed.process_prefix](s.port)
            assert code == grpc.StatusCode.UNAUTHENTICATED, \
                f"{s.name} on {s.address} ({allowed.why}) answered {code} to a call without Ray's token"
        used = {a for s in wide if (a := s.allowance()) is not None}
        assert used == set(ALL_INTERFACES_ALLOWED), "an allow-list entry no longer applies: drop it (and " \
                                                    "its line in the README's Security section)"
        assert len(wide) == 4  # one per replica: the ingress, the routing store and the two of tp1

        # `parallax status` shows where the deployment's own services listen, Prometheus and load generator too
        metrics = ClientMetrics(loadgen_port)
        prom = start_prometheus(tmp_path / "run", [], port=prom_port)
        try:
            status = subprocess.run([*cli, "status", "--json"], env=env, capture_output=True, text=True,
                                    timeout=60)
        finally:
            stop_prometheus(prom)
            metrics.close()
        assert status.returncode == 0, status.stderr
        [entry] = json.loads(status.stdout)
        shown = {r["service"]: r["addresses"] for r in entry["listening"]}
        assert shown["ingress (OpenAI API)"] == [f"127.0.0.1:{port}"]
        direct = [r["addresses"] for r in entry["listening"] if r["service"] == "ingress replica (OpenAI API, direct)"]
        assert direct == [[st.ingress_urls[0].removeprefix("http://")]]   # the replica's own server, on loopback
        assert shown["Ray metrics export"] == [f"127.0.0.1:{metrics_port}"]
        assert shown["Prometheus"] == [f"127.0.0.1:{prom_port}"]
        assert shown["load generator metrics"] == [f"127.0.0.1:{loadgen_port}"]
        assert sorted(shown[ALL_INTERFACES_ALLOWED[0].what]) == sorted(s.address for s in wide)
        assert not [k for k in shown if k.startswith("NOT EXPECTED")]
    finally:
        down = subprocess.run([*cli, "down", "--all"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
