"""The socket measurement behind `parallax status` and test_local_exposure, on this process's own sockets;
and the local Ray start's single-node switch, which must not outlive the start."""

import os
import socket
from pathlib import Path

import pytest
import yaml
from ray._private import ray_constants

from controllers.cli.serve import _listening
from deployments.cluster import _single_node
from deployments.daemon import UpState
from deployments.listening import ListeningSocket, is_loopback, listening_on, listening_sockets, session_pids


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_own_listening_socket_is_found_with_its_address(family: int, host: str) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    with socket.socket(family) as s:
        s.bind((host, 0))
        s.listen()
        port = s.getsockname()[1]
        mine = [x for x in listening_sockets(session_pids(os.getsid(0))) if x.port == port]
        assert [(x.pid, x.host, x.loopback) for x in mine] == [(os.getpid(), host, True)]
        expected = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        assert mine[0].address == expected
        assert listening_on(port) == [expected]
    assert not [x for x in listening_sockets([os.getpid()]) if x.port == port]  # closed: gone


@pytest.mark.parametrize(("host", "loopback"), [("0.0.0.0", False), ("::", False), ("192.0.2.7", False),
                                                ("127.0.0.1", True), ("::1", True)])
def test_only_loopback_counts_as_loopback(host: str, loopback: bool) -> None:
    assert ListeningSocket(1, "x", host, 80).loopback is loopback


@pytest.mark.parametrize(("host", "loopback"), [("localhost", True), ("[::1]", True), ("127.0.0.2", True),
                                                ("auto", False), ("ray://127.0.0.1", False), ("head.svc", False)])
def test_cluster_address_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_ipv4_mapped_loopback_counts_as_loopback() -> None:
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::ffff:127.0.0.1", 0))
        s.listen()
        [mine] = [x for x in listening_sockets([os.getpid()]) if x.port == s.getsockname()[1]]
    assert (mine.host, mine.loopback) == ("127.0.0.1", True)


def test_allow_list_covers_serve_replicas_only() -> None:
    replica = ListeningSocket(1, "ray::ServeReplica:parallax:llm-tp8", "::", 4000)
    assert replica.allowance() is not None and "UNAUTHENTICATED" in replica.allowance().guard  # type: ignore[union-attr]
    for process in ("ray::ProxyActor", "/venv/ray/core/src/ray/gcs/gcs_server --x", "python -m deployments.daemon"):
        assert ListeningSocket(1, process, "0.0.0.0", 4000).allowance() is None


def test_single_node_switch_is_restored_after_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    env = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    monkeypatch.delenv(env, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with _single_node():
        assert os.environ[env] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert env not in os.environ and before == ray_constants.ENABLE_RAY_CLUSTER
    monkeypatch.setenv(env, "1")
    with pytest.raises(RuntimeError), _single_node():
        raise RuntimeError
    assert os.environ[env] == "1" and before == ray_constants.ENABLE_RAY_CLUSTER


@pytest.mark.parametrize(("process", "name"), [
    ("ray::ServeReplica:parallax:ingress", "ray::ServeReplica:parallax:ingress"),
    ("/v/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/x", "raylet"),
    ("/v/bin/python -u /v/ray/autoscaler/_private/monitor.py --logs-dir=/tmp/x", "monitor.py"),
    ("/v/bin/python3.11 -m deployments.daemon /tmp/state.json", "deployments.daemon"),
    ("prometheus --config.file=/x", "prometheus"),
])
def test_process_name_is_what_runs(process: str, name: str) -> None:
    assert ListeningSocket(1, process, "127.0.0.1", 80).name == name


def test_status_of_an_attached_deployment_shows_recorded_ingress_and_measured_local_ports(tmp_path: Path) -> None:
    with socket.socket() as loadgen, socket.socket() as free:
        loadgen.bind(("127.0.0.1", 0))
        loadgen.listen()
        free.bind(("127.0.0.1", 0))  # bound, not listening: Prometheus is not up
        prom_port, loadgen_port = free.getsockname()[1], loadgen.getsockname()[1]
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({
            "name": "s", "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm", "gpus_per_node": 1},
            "configurations": [{"name": "tp1", "tp": 1}],
            "classes": [{"name": "c", "share": 1.0, "slo": {"ttft_ms": 100},
                         "input": {"kind": "fixed", "value": 8}, "output": {"kind": "fixed", "value": 4}}],
            "server": {"api_key_env": "MY_KEY"},
            "monitoring": {"prometheus_port": prom_port, "loadgen_metrics_port": loadgen_port}}))
        st = UpState(name="s", scenario=str(path), mode="attached", status="ready", url="http://10.0.0.5:8000")
        rows = {r.service: (r.addresses, r.access) for r in _listening(st)}
    assert rows == {"ingress (OpenAI API), on the cluster": (["10.0.0.5:8000"], "Bearer key from $MY_KEY"),
                    "Prometheus": ([], "none; read-only API"),
                    "load generator metrics": ([f"127.0.0.1:{loadgen_port}"], "none; metrics only")}
