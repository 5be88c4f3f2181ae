"""`parallax up | status | down | serve-config`: thin commands over deployments.deploy and the daemon."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import typer
import yaml
from rich.table import Table

from controllers.cli.terminal import console, fail
from deployments.cluster import CapacityError, connect
from deployments.daemon import UpState
from deployments.deploy import DeployError, deploy, teardown
from deployments.listening import ALL_INTERFACES_ALLOWED, ListeningSocket, listening_on, listening_sockets, session_pids
from deployments.resolve import Resolved, load_scenario
from deployments.serve_config import serve_config
from schema.scenario import ScenarioError

STATE_DIR_ENV = "PARALLAX_STATE_DIR"


def state_dir() -> Path:
    """Where `up` records what it started: $PARALLAX_STATE_DIR, else runs/up under the current folder."""
    return Path(os.environ.get(STATE_DIR_ENV, "runs/up"))


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the holder's session `sid` (killing its process group alone would miss
    Ray's workers)."""
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _load(scenario: Path) -> Resolved:
    try:
        return load_scenario(scenario, serving=True)
    except ScenarioError as e:
        fail(str(e))
        raise AssertionError from e  # unreachable: fail exits


def _print_progress(lines: list[str]) -> None:
    """Each configuration's state while the deployment starts (progress.ConfigProgress.line)."""
    for line in lines:
        console.print(f"  {line}", highlight=False)


def _print_up(st: UpState) -> None:
    console.print(f"[bold]{st.name}[/] is up at [bold]{st.url}[/] (OpenAI API under /v1); "
                  f"Ray metrics at {st.metrics_url or 'the cluster metrics port'}")
    if st.ingress_urls:
        console.print(f"the ingress replicas answer directly (no proxy hop) at {','.join(st.ingress_urls)}: "
                      "give that to `parallax load --target`")
    table = Table("config", "replica", "placement group", "strategy", "bundles", "GPUs", "state")
    for cfg, reps in st.placements.items():
        for i, p in enumerate(reps):
            gpus = sum(b.get("GPU", 0) for b in p["bundles"])
            table.add_row(cfg, str(i), p["placement_group"].split("#")[-1], p["strategy"], str(len(p["bundles"])),
                          f"{gpus:g}", p["state"])
    console.print(table)


def up_cmd(
    scenario: Path = typer.Argument(..., help="scenario YAML file"),
    host: str = typer.Option(None, help="bind address of the HTTP API (default: the scenario's server.host)"),
    port: int = typer.Option(None, help="HTTP port (default: the scenario's server.port)"),
    metrics_port: int = typer.Option(None, help="Ray's metrics export port (default: server.metrics_port)"),
    timeout: float | None = typer.Option(
        None, help="seconds to wait for every configuration to be ready (default: the scenario's "
        "server.deploy_timeout_s: 120 for sim, 3600 for vllm)"),
) -> None:
    """Start a local Ray (or attach to RAY_ADDRESS), deploy every configuration, print the endpoint."""
    r = _load(scenario)
    sdir = state_dir()
    sdir.mkdir(parents=True, exist_ok=True)
    path = sdir / f"{r.scenario.name}.json"
    if path.exists():
        old = UpState.read(path)
        if old.mode == "attached" or _alive(old.pid):
            fail(f"{old.name} is already up ({old.url}); run `parallax down {old.name}` first")
        _cleanup(old, path)
    wait = r.scenario.resolved_deploy_timeout_s if timeout is None else timeout
    console.print(f"deploying {', '.join(c.name for c in r.scenario.configurations)}; waiting up to {wait:g} s")
    if os.environ.get("RAY_ADDRESS"):
        st = _up_attached(r, path, host, port, wait)
    else:
        st = _up_local(r, path, scenario.resolve(), host, port, metrics_port, wait)
    _print_up(st)


def _up_attached(r: Resolved, path: Path, host: str | None, port: int | None, timeout: float) -> UpState:

    address = os.environ["RAY_ADDRESS"]
    connect(address)
    try:
        info = deploy(r, host=host, port=port, timeout_s=timeout,
                      on_progress=lambda progress: _print_progress([p.line() for p in progress]))
    except (CapacityError, DeployError) as e:
        fail(str(e))
    st = UpState(name=r.scenario.name, scenario=r.source, mode="attached", status="ready", ray_address=address,
                 url=info.url, ingress_urls=info.ingress_urls,
                 placements={k: [vars(p) for p in v] for k, v in info.placements.items()})
    st.write(path)
    return st


def _up_local(r: Resolved, path: Path, scenario: Path, host: str | None, port: int | None,
              metrics_port: int | None, timeout: float) -> UpState:
    log = path.with_suffix(".log")
    st = UpState(name=r.scenario.name, scenario=str(scenario), mode="local", status="starting", log=str(log))
    st.write(path)
    cmd = [sys.executable, "-m", "deployments.daemon", str(path.resolve()), str(scenario), "--timeout", str(timeout)]
    for flag, value in (("--host", host), ("--port", port), ("--metrics-port", metrics_port)):
        if value is not None:
            cmd += [flag, str(value)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout + 60
    shown: list[str] = []
    while time.monotonic() < deadline:
        st = UpState.read(path)
        if st.progress != shown:
            _print_progress(st.progress)
            shown = st.progress
        if st.status == "ready":
            return st
        if st.status == "failed" or proc.poll() is not None:
            proc.wait(timeout=30)
            _cleanup(st, path, keep_log=st.error is None)
            fail(st.error or f"the Ray holder process exited with code {proc.returncode}; see {log}")
        time.sleep(0.3)
    _stop(st, path)
    fail(f"{r.scenario.name} was not up after {timeout + 60:g} s; see {log}")
    raise AssertionError  # unreachable


def status_cmd(as_json: bool = typer.Option(False, "--json", help="print the recorded state as JSON")) -> None:
    """Show what `parallax up` started: endpoint, health, routing and placement of each configuration."""
    states = [UpState.read(p) for p in sorted(state_dir().glob("*.json"))]
    if not states:
        console.print("nothing is up")
        return
    out = []
    for st in states:
        health = routing = None
        if st.url:
            try:
                health = httpx.get(f"{st.url}/health", timeout=5).json()
                routing = httpx.get(f"{st.url}/v1/routing", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                health = None
        alive = st.mode == "attached" or _alive(st.pid)
        listening = _listening(st) if alive else []
        out.append({**st.model_dump(), "process_alive": alive, "health": health, "routing": routing,
                    "listening": [asdict(r) for r in listening]})
        if not as_json:
            state = "[green]healthy[/]" if health else "[red]not answering[/]"
            console.print(f"[bold]{st.name}[/] ({st.mode}, {st.status}, {state}) at {st.url}")
            if routing:
                console.print(f"  routing: {json.dumps(routing.get('weights'))}")
            _print_up(st)
            _print_listening(listening)
    if as_json:
        print(json.dumps(out, indent=2))


@dataclass(frozen=True)
class ServiceAddresses:
    """Where one service of a deployment listens (addresses None: the OS would not say)."""
    service: str
    port: int | None
    addresses: list[str] | None
    access: str


def _port(url: str | None) -> int | None:
    return httpx.URL(url).port if url else None


def _listening(st: UpState) -> list[ServiceAddresses]:
    """What listens for this deployment, measured on this host: the local Ray's processes, and the
    scenario's Prometheus and load generator ports. On a cluster, the ingress as recorded (the cluster's
    other ports: README, Security)."""
    try:
        scenario = load_scenario(st.scenario).scenario
    except ScenarioError:
        scenario = None
    ingress, metrics = _port(st.url), _port(st.metrics_url)
    direct = [p for p in map(_port, st.ingress_urls) if p is not None]
    key_env = scenario.server.api_key_env if scenario else None
    api_access = f"Bearer key from ${key_env}" if key_env else "none (server.api_key_env unset)"
    rows = []
    if st.mode == "local" and st.pid is not None:
        sockets = listening_sockets(session_pids(st.pid))
        rows += [ServiceAddresses("ingress (OpenAI API)", ingress, _at(sockets, ingress), api_access)]
        rows += [ServiceAddresses("ingress replica (OpenAI API, direct)", p, _at(sockets, p), api_access)
                 for p in direct]
        rows.append(ServiceAddresses("Ray metrics export", metrics, _at(sockets, metrics), "none; metrics only"))
        ray = [s for s in sockets if s.port not in (ingress, metrics, *direct)]
        rows.append(ServiceAddresses("Ray's own servers", None, [s.address for s in ray if s.loopback],
                                     "loopback only (README: Security)"))
        for allowed in ALL_INTERFACES_ALLOWED:
            wide = [s.address for s in ray if not s.loopback and s.allowance() == allowed]
            if wide:
                rows.append(ServiceAddresses(allowed.what, None, wide, allowed.guard))
        rows += [ServiceAddresses(f"NOT EXPECTED: {s.name}", s.port, [s.address], "unknown")
                 for s in ray if not s.loopback and s.allowance() is None]
    elif st.url:  # on the cluster, not necessarily on this host: as recorded
        rows.append(ServiceAddresses("ingress (OpenAI API), on the cluster", ingress,
                                     [httpx.URL(st.url).netloc.decode()], api_access))
    if scenario is not None:
        mon = scenario.monitoring
        if not mon.prometheus_url:
            rows.append(ServiceAddresses("Prometheus", mon.prometheus_port,
                                         listening_on(mon.prometheus_port), "none; read-only API"))
        rows.append(ServiceAddresses("load generator metrics", mon.loadgen_metrics_port,
                                     listening_on(mon.loadgen_metrics_port), "none; metrics only"))
    return rows


def _at(sockets: list[ListeningSocket], port: int | None) -> list[str]:
    return [s.address for s in sockets if s.port == port]


def _print_listening(rows: list[ServiceAddresses]) -> None:
    table = Table("listening", "address", "authentication")
    for r in rows:
        if r.addresses is None:
            where = "unknown (the OS lists other processes' sockets to root only)"
        elif not r.addresses:
            where = f"nothing on :{r.port}"
        elif len(r.addresses) > 4:  # Ray's many servers: how many on which host
            hosts = Counter(a.rsplit(":", 1)[0] for a in r.addresses)
            where = ", ".join(f"{h}: {n} ports" for h, n in sorted(hosts.items()))
        else:
            where = ", ".join(r.addresses)
        table.add_row(r.service, where, r.access)
    console.print(table)


def down_cmd(
    name: str = typer.Argument(None, help="what to take down (default: the only one up)"),
    all_: bool = typer.Option(False, "--all", help="take down everything `parallax up` started here"),
) -> None:
    """Stop what `parallax up` started: Serve, the local Ray, temp files."""
    paths = sorted(state_dir().glob("*.json"))
    if name is not None:
        paths = [p for p in paths if p.stem == name]
        if not paths:
            fail(f"{name} is not up; `parallax status` lists what is")
    elif len(paths) > 1 and not all_:
        fail(f"several are up ({', '.join(p.stem for p in paths)}); name one or use --all")
    if not paths:
        console.print("nothing is up")
        return
    for p in paths:
        st = UpState.read(p)
        _stop(st, p)
        console.print(f"{st.name} is down")


def _stop(st: UpState, path: Path) -> None:
    if st.mode == "attached" and st.ray_address:
        import ray

        connect(st.ray_address)
        teardown()
        ray.shutdown()
    elif st.pid is not None and _alive(st.pid):
        os.kill(st.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(st.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(st.pid):
            _kill_session(st.pid)
    elif st.pid is not None and st.temp_dir and Path(st.temp_dir).exists():
        _kill_session(st.pid)  # the holder crashed before its teardown: Ray's processes live on in its session
    _cleanup(st, path)


def _cleanup(st: UpState, path: Path, keep_log: bool = False) -> None:
    if st.temp_dir:
        shutil.rmtree(st.temp_dir, ignore_errors=True)
    if st.log and not keep_log:
        Path(st.log).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def serve_config_cmd(
    scenario: Path = typer.Argument(..., help="scenario YAML file"),
    output: Path = typer.Option(None, "--output", "-o", help="file to write (default: stdout)"),
    host: str = typer.Option(None, help="HTTP bind address (default: the scenario's server.host)"),
    port: int = typer.Option(None, help="HTTP port (default: the scenario's server.port)"),
) -> None:
    """Write a Ray Serve config YAML for `serve deploy` on an existing cluster."""
    text = yaml.safe_dump(serve_config(_load(scenario), host, port), sort_keys=False)
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        console.print(f"wrote {output}; deploy it with `serve deploy {output}` (the cluster needs this package)")
