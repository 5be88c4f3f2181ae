"""Library API: deploy a scenario's configurations on the connected Ray cluster, wait, report, tear down.

    deploy(resolved) -> DeployedApp   # after ray.init / cluster.start_local_ray / cluster.connect
    teardown()                        # removes the Serve applications and Serve itself

A scenario is several Serve applications (app.py): the front (`parallax`: ingress and routing store) and one
per configuration (`parallax-<configuration>`), started together by one `serve.run_many`; the fleet
(fleet.py) adds and deletes configuration applications later.
"""

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve._private.common import RequestProtocol
from ray.serve.context import _get_global_client
from ray.serve.handle import DeploymentHandle
from ray.serve.schema import ApplicationStatus, ApplicationStatusOverview, ServeInstanceDetails

from deployments.app import DIRECT_INGRESS_ENV, build_app, config_app
from deployments.app_args import (
    APP_NAME,
    INGRESS_NAME,
    REPLICA_NAME_PREFIX,
    AppArgs,
    config_app_name,
    is_config_app,
    replica_name_prefix,
    server_deployment_name,
)
from deployments.cluster import check_capacity, start_local_ray
from deployments.progress import ConfigProgress, config_progress
from deployments.resolve import Resolved
from monitoring.ports import free_port
from schema.deployment import ParallelConfig

ProgressCallback = Callable[[list[ConfigProgress]], None]


class DeployError(RuntimeError):
    """The application did not become ready; the message names the deployments at fault."""


@dataclass(frozen=True)
class PlacedReplica:
    """Where one replica's placement group landed."""

    placement_group: str
    strategy: str
    state: str
    bundles: list[dict[str, float]]
    nodes: list[str]            # node id of each bundle


@dataclass(frozen=True)
class DeployedApp:
    """Where a deployed scenario answers, and how each configuration was placed.

    `url` goes through Serve's proxy; `ingress_urls` reach the ingress replicas' own HTTP servers
    (`server.direct_ingress`), the cheaper path: clients spread their requests over them.
    """

    url: str
    app_name: str
    placements: dict[str, list[PlacedReplica]] = field(default_factory=dict)
    ingress_urls: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        """What a client should send to: the ingress replicas' addresses (comma-separated), else `url`."""
        return ",".join(self.ingress_urls) or self.url

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deploy(resolved: Resolved, *, host: str | None = None, port: int | None = None,
           timeout_s: float | None = None, replace: bool = False,
           on_progress: ProgressCallback | None = None) -> DeployedApp:
    """Deploy every configuration plus the ingress; fail fast when the cluster is too small.

    The wait is `timeout_s`, else the scenario's (`server.deploy_timeout_s`, per engine by default);
    `on_progress` gets each configuration's state whenever it changes meanwhile.
    The resources of an application parallax already deployed count as available (it would be replaced),
    but it is replaced only with `replace=True`; otherwise it is left alone and this raises DeployError.
    """
    srv = resolved.scenario.server
    host = host or srv.host
    port = srv.port if port is None else port
    running = parallax_apps()
    check_capacity(resolved, credit=held_resources() if running else None)
    if running:
        if not replace:
            raise DeployError(f"an application {APP_NAME!r} already runs on this cluster; take it down first "
                              "(`parallax down`)")
        delete_apps(running)
    front = build_app(AppArgs.from_resolved(resolved).model_dump())
    controller = {"runtime_env": {"env_vars": DIRECT_INGRESS_ENV}} if srv.direct_ingress else None
    try:
        serve.start(http_options={"host": host, "port": port}, controller_options=controller)
        serve.run_many([serve.RunTarget(front, name=APP_NAME, route_prefix="/",
                                        logging_config={"enable_access_log": False}),
                        *(config_target(resolved, c) for c in resolved.scenario.configurations)],
                       wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    except ray.exceptions.RayError as e:  # e.g. the HTTP proxy cannot bind its port
        if "Failed to bind" in str(e):
            raise DeployError(f"cannot listen on {host}:{port}: the address is in use; choose another port "
                              "(--port or server.port)") from None
        raise DeployError(f"Serve did not start: {str(e).strip().splitlines()[-1]}") from None
    wait_ready(resolved, resolved.scenario.resolved_deploy_timeout_s if timeout_s is None else timeout_s,
               on_progress=on_progress)
    direct = ingress_urls(host, srv.ingress_replicas) if srv.direct_ingress else []
    return DeployedApp(url=f"http://{host}:{port}", app_name=APP_NAME, placements=placements(resolved),
                      ingress_urls=direct)


def ingress_urls(host: str, replicas: int, timeout_s: float = 10.0) -> list[str]:
    """The ingress replicas' own HTTP addresses that this machine can reach (Serve's direct ingress);
    none when the running Serve controller was started without it (then the proxy's `url` serves)."""
    node_ip = ray.util.get_node_ip_address()
    client = _get_global_client()
    assert client is not None  # it raises when Serve is not running
    deadline = time.monotonic() + timeout_s
    while True:
        details = ServeInstanceDetails(**client.get_serve_details())
        groups = [g for g in details.target_groups if g.app_name == APP_NAME and g.protocol == RequestProtocol.HTTP]
        if groups and not any(g.ingress_deployment_name == INGRESS_NAME for g in groups):
            return []  # the controller routes through proxies: direct ingress is off
        targets = [t for g in groups for t in g.targets]
        if len(targets) >= replicas or time.monotonic() > deadline:
            local = host in ("127.0.0.1", "localhost")
            return sorted(f"http://127.0.0.1:{t.port}" if local else f"http://{t.ip}:{t.port}"
                          for t in targets if not local or t.ip == node_ip)
        time.sleep(0.2)


def config_target(resolved: Resolved, config: ParallelConfig, joins: bool = False) -> serve.RunTarget:
    """The Serve application of one configuration: no HTTP route of its own (the ingress calls it by handle);
    its replica count can be changed in place (`external_scaler_enabled`: fleet.scale_config)."""
    return serve.RunTarget(config_app(resolved, config, joins), name=config_app_name(config.name), route_prefix=None,
                           logging_config={"enable_access_log": False}, external_scaler_enabled=True)


def wait_ready(resolved: Resolved, timeout_s: float, app_name: str | None = None,
               on_progress: ProgressCallback | None = None,
               configs: Sequence[ParallelConfig] | None = None) -> None:
    """Poll Serve until the applications run: `app_name` alone, else the front and those of `configs` (default:
    the scenario's). On failure or timeout remove them and raise a clear DeployError. `on_progress` gets every
    configuration's state (progress.py) each time it changes."""
    watched = resolved.scenario.configurations if configs is None else list(configs)
    apps = [app_name] if app_name is not None else [
        *([APP_NAME] if configs is None else []), *(config_app_name(c.name) for c in watched)]
    deadline = time.monotonic() + timeout_s
    shown: list[ConfigProgress] = []
    while True:
        status = serve.status().applications
        found = {a: status[a] for a in apps if a in status}
        if found and on_progress is not None:
            now = _progress(watched, found)
            if now != shown:
                on_progress(now)
                shown = now
        if len(found) == len(apps) and all(st.status == ApplicationStatus.RUNNING for st in found.values()):
            return
        failed = [a for a, st in found.items() if st.status == ApplicationStatus.DEPLOY_FAILED]
        if failed or time.monotonic() > deadline:
            detail = "; ".join(f"{name}: {d.status.value} {d.message}".strip()
                               for st in found.values() for name, d in st.deployments.items()
                               if d.status.value != "HEALTHY")
            delete_apps(apps)
            why = "failed" if failed else f"was not ready after {timeout_s:g} s"
            what = ", ".join(failed) if failed else app_name or ", ".join(c.name for c in watched)
            raise DeployError(f"{resolved.source}: deploying {what} {why}"
                              + (f": {detail}" if detail else "")
                              + ("" if failed else "; a replica may be waiting for GPUs/CPUs the cluster lacks"))
        time.sleep(0.25)


def _progress(configs: Sequence[ParallelConfig], found: dict[str, ApplicationStatusOverview]) -> list[ConfigProgress]:
    """Each configuration's replicas and what they wait for, from Serve's status and the placement groups."""
    groups = config_placements([c.name for c in configs])
    out = []
    for c in configs:
        st = found.get(config_app_name(c.name))
        d = st.deployments.get(server_deployment_name(c.name)) if st is not None else None
        if d is not None:
            states = {getattr(state, "value", state): n for state, n in d.replica_states.items()}  # str at run time
            out.append(config_progress(c.name, c.replicas, states, d.status.value, d.message,
                                       [p.state for p in groups[c.name]]))
    return out


def placements(resolved: Resolved) -> dict[str, list[PlacedReplica]]:
    """Each of the scenario's configurations' replica placement groups."""
    return config_placements([c.name for c in resolved.scenario.configurations])


def config_placements(configs: Sequence[str]) -> dict[str, list[PlacedReplica]]:
    """Each configuration's replica placement groups (not yet removed), from Ray's placement group table."""
    table = ray.util.placement_group_table()
    out: dict[str, list[PlacedReplica]] = {c: [] for c in configs}
    for pg in table.values():
        name = pg.get("name", "")
        config = next((c for c in configs if name.startswith(replica_name_prefix(c))), None)
        if config is None or pg["state"] == "REMOVED":
            continue
        bundles = [pg["bundles"][i] for i in sorted(pg["bundles"])]
        nodes = [pg["bundles_to_node_id"].get(i, "") for i in sorted(pg["bundles"])]
        out[config].append(PlacedReplica(placement_group=name, strategy=pg["strategy"], state=pg["state"],
                                         bundles=bundles, nodes=nodes))
    return out


def parallax_apps() -> list[str]:
    """The Serve applications parallax runs on this cluster: the front, then each configuration's."""
    names = serve.status().applications
    return [a for a in names if a == APP_NAME] + sorted(a for a in names if is_config_app(a))


def delete_apps(names: Sequence[str]) -> None:
    """Delete Serve applications together (each replica's graceful stop runs meanwhile) and wait until gone."""
    client = _get_global_client()
    assert client is not None  # it raises when Serve is not running
    client.delete_apps(list(names), blocking=True)


def held_resources() -> dict[str, float]:
    """GPUs and CPUs reserved by the placement groups of the running parallax applications."""
    held: dict[str, float] = {}
    for pg in ray.util.placement_group_table().values():
        if _is_parallax_pg(pg.get("name", "")) and pg["state"] == "CREATED":
            for bundle in pg["bundles"].values():
                for key, value in bundle.items():
                    held[key] = held.get(key, 0.0) + value
    return held


def ingress_handle() -> DeploymentHandle:
    """The ingress, for `get_routing()` / `set_routing(weights)` through a Serve handle from inside the
    cluster (the controller PUTs /v1/routing over HTTP instead: controllers/router_client.py)."""
    return serve.get_deployment_handle(INGRESS_NAME, app_name=APP_NAME)


@contextlib.contextmanager
def deployed_locally(resolved: Resolved, timeout_s: float | None = None) -> Iterator[DeployedApp]:
    """A fresh local Ray (its files in a temp folder, free ports) with the scenario deployed; everything is
    removed on exit. For benchmarks and tests."""
    folder = Path(tempfile.mkdtemp(prefix="plx-"))
    try:
        start_local_ray(resolved, folder / "ray", free_port())
        yield deploy(resolved, port=free_port(), timeout_s=timeout_s)
    finally:
        try:
            teardown()
        finally:
            ray.shutdown()
            shutil.rmtree(folder, ignore_errors=True)


def _is_parallax_pg(name: str) -> bool:
    app = name.removeprefix(REPLICA_NAME_PREFIX).split("#")[0]
    return name.startswith(REPLICA_NAME_PREFIX) and (app == APP_NAME or is_config_app(app))


def teardown() -> None:
    """Remove the applications and shut Serve down (the Ray cluster stays)."""
    if ray.is_initialized():
        apps = parallax_apps()
        if apps:
            delete_apps(apps)  # blocks while each replica's __del__ stops its engine (vLLM's processes)
        serve.shutdown()
