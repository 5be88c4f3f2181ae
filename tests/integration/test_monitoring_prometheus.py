"""The Prometheus launcher against the real binary: start, readiness, state file, clean stop, attach, errors."""

import socket
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from controllers.cli.app import app
from monitoring.prometheus import (
    PrometheusHandle,
    PrometheusLaunchError,
    ScrapeTarget,
    attach_prometheus,
    read_state,
    reload_rules,
    restart_prometheus,
    running_prometheus,
    start_prometheus,
    stop_prometheus,
    stop_run,
)
from monitoring.promql import PromClient, PrometheusError
from monitoring.rules import recording_rules
from schema.deployment import ParallelConfig
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_restart_comes_back_on_the_same_port_with_its_series(tmp_path: Path) -> None:
    """The restart_prometheus fault: stopped, started again on its port, config and data; the handle and the
    state file name the new process, and the series stored before the restart are still there."""
    handle = start_prometheus(tmp_path, [ScrapeTarget("ray", 1)], recording_rules([ParallelConfig(name="a")]),
                              scrape_interval_s=1)
    first = handle.pid
    try:
        with PromClient(handle.url, timeout_s=5) as client:
            def samples() -> float:   # of `up` (its target is down) in the last 5 minutes
                return max((x.value for x in client.query("count_over_time(up[5m])")), default=0.0)
            wait_until(lambda: samples() >= 3, 60, "three scrapes")
            before = samples()
            stopped_s, ready_s = restart_prometheus(handle)
            print(f"\nWAITED restart: stopped after {stopped_s:.2f} s, ready after {ready_s:.2f} s", flush=True)
            assert handle.pid != first and handle.url == f"http://127.0.0.1:{handle.port}"
            assert not _alive(first or 0)
            recorded = read_state(tmp_path)
            assert recorded is not None and recorded.pid == handle.pid
            assert 0 < stopped_s <= ready_s
            assert samples() >= before       # the samples from before the restart are still there
    finally:
        stop_prometheus(handle)
    assert not _alive(handle.pid or 0)
    with pytest.raises(PrometheusLaunchError, match="was not started here"):
        restart_prometheus(PrometheusHandle(url="http://127.0.0.1:9", port=9, folder="", attached=True))


def test_reloaded_rules_record_the_configurations_serving_now(tmp_path: Path) -> None:
    """A re-partition deployed configuration b beside a (and scaled a to two replicas): once the rules are
    reloaded, `parallax:config_gpus` has b's GPUs and a's new count, without a restart."""
    handle = start_prometheus(tmp_path, [ScrapeTarget("ray", 1)], recording_rules([ParallelConfig(name="a")]),
                              scrape_interval_s=1)
    first = handle.pid
    try:
        with PromClient(handle.url, timeout_s=5) as client:
            def gpus() -> dict[str, float]:
                return {x.labels["config"]: x.value for x in client.query("parallax:config_gpus")}
            wait_until(lambda: gpus() == {"a": 1.0}, 60, "a's GPUs recorded")
            reload_rules(handle, recording_rules([ParallelConfig(name="a", replicas=2),
                                                  ParallelConfig(name="b", tp=2, pp=2)]))
            wait_until(lambda: gpus() == {"a": 2.0, "b": 4.0}, 60, "the reloaded rules' GPUs recorded")
            assert handle.pid == first
    finally:
        stop_prometheus(handle)


def test_start_writes_everything_into_the_run_folder_and_stops_cleanly(tmp_path: Path) -> None:
    targets = [ScrapeTarget("ray", 1), ScrapeTarget("loadgen", 2)]
    rules = recording_rules([ParallelConfig(name="tp8", tp=8)])
    handle = start_prometheus(tmp_path, targets, rules, scrape_interval_s=2)
    try:
        folder = tmp_path / "prometheus"
        assert httpx.get(f"{handle.url}/-/ready").status_code == 200
        assert handle.url == f"http://127.0.0.1:{handle.port}"
        assert (folder / "data").is_dir()
        config = yaml.safe_load((folder / "prometheus.yml").read_text())
        assert config["global"]["scrape_interval"] == "2s"
        assert [j["static_configs"][0]["targets"] for j in config["scrape_configs"]] == [["127.0.0.1:1"],
                                                                                         ["127.0.0.1:2"]]
        rules = httpx.get(f"{handle.url}/api/v1/rules").json()["data"]["groups"]
        assert rules and rules[0]["rules"][0]["name"] == "parallax:config_gpus"
        # Another process (the CLI's `down`) only has the state file.
        recorded = read_state(tmp_path)
        assert recorded is not None and recorded.pid == handle.pid and recorded.url == handle.url
    finally:
        stopped = stop_run(tmp_path)
    assert stopped is not None
    handle._proc.wait(10)  # type: ignore[union-attr]  # we are its parent: reap it
    assert not _alive(handle.pid or 0)
    assert read_state(tmp_path) is None
    with PromClient(handle.url, timeout_s=2) as client, pytest.raises(PrometheusError, match="not reachable"):
        client.query("up")  # the controller sees a clear error once Prometheus is gone
    assert "See you next time" in (tmp_path / "prometheus" / "prometheus.log").read_text()  # clean SIGTERM exit


def test_cli_up_and_down(tmp_path: Path) -> None:
    runner = CliRunner()
    run_dir = tmp_path / "run"
    up = runner.invoke(app, ["prometheus", "up", "--run-dir", str(run_dir), "--port", "0", "--ray-port", "1",
                             "--target", "vllm=127.0.0.1:2"])
    assert up.exit_code == 0, up.output
    state = read_state(run_dir)
    assert state is not None and state.pid and _alive(state.pid)
    try:
        again = runner.invoke(app, ["prometheus", "up", "--run-dir", str(run_dir), "--port", "0"])
        assert again.exit_code == 2 and "already runs" in again.output
        status = runner.invoke(app, ["prometheus", "status", "--run-dir", str(run_dir)])
        assert status.exit_code == 0 and '"ready": true' in status.output
        jobs = yaml.safe_load((run_dir / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
        assert [j["job_name"] for j in jobs] == ["ray", "loadgen", "controller", "vllm"]
    finally:
        down = runner.invoke(app, ["prometheus", "down", "--run-dir", str(run_dir)])
    assert down.exit_code == 0 and "stopped" in down.output
    assert not _alive(state.pid)
    assert "nothing to stop" in runner.invoke(app, ["prometheus", "down", "--run-dir", str(run_dir)]).output


def test_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(PrometheusLaunchError, match=f"port {port} is in use"):
            start_prometheus(tmp_path, [], port=port, ready_timeout_s=10)
    assert read_state(tmp_path) is None


def test_missing_binary_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrometheusLaunchError, match="install it"):
        start_prometheus(tmp_path, [])
    monkeypatch.setenv("PARALLAX_PROMETHEUS", str(tmp_path / "nope"))
    with pytest.raises(PrometheusLaunchError, match="PARALLAX_PROMETHEUS"):
        start_prometheus(tmp_path, [])


def test_attach_uses_an_existing_server_and_never_stops_it(tmp_path: Path) -> None:
    with running_prometheus(tmp_path / "own", []) as own:
        attached = attach_prometheus(own.url, tmp_path / "other")
        assert attached.attached and attached.url == own.url
        stop_run(tmp_path / "other")
        assert httpx.get(f"{own.url}/-/ready").status_code == 200
        unrecorded = attach_prometheus(own.url)  # recorded nowhere: stopping it touches no file and no process
        assert not stop_prometheus(unrecorded) and unrecorded.folder == ""
        assert httpx.get(f"{own.url}/-/ready").status_code == 200
        result = CliRunner().invoke(app, ["prometheus", "up", "--run-dir", str(tmp_path / "cli"), "--url", own.url])
        assert result.exit_code == 0 and "attached" in result.output
        assert (tmp_path / "cli" / "prometheus" / "rules.yml").exists()
    assert not _alive(own.pid or 0)


def test_attach_to_nothing_is_reported(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PrometheusLaunchError, match="is not ready"):
        attach_prometheus(f"http://127.0.0.1:{port}", tmp_path, timeout_s=1)
    result = CliRunner().invoke(app, ["dashboards", "check", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 2 and "not ready" in result.output


def test_no_orphan_when_the_context_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), running_prometheus(tmp_path, []) as h:
        pid = h.pid
        raise RuntimeError("caller failed")
    assert pid and not _alive(pid)
    assert read_state(tmp_path) is None
