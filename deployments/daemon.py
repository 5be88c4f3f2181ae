"""`parallax up` without RAY_ADDRESS: a detached process that owns a local Ray cluster and the deployment.

    python -m deployments.daemon STATE_FILE SCENARIO [--port P] [--metrics-port M] [--timeout S]

It starts Ray (metrics port, temp dir under /tmp), deploys, writes the state file (each configuration's
progress while it starts; then status "ready" with URL and placements, or "failed" with the reason) and
waits. SIGTERM tears everything down: Serve, Ray, the temp dir and the state file.
"""

import argparse
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from deployments.cluster import start_local_ray
from deployments.deploy import deploy, teardown
from deployments.engines.vllm.cleanup import remove_leftovers, snapshot_leftovers
from deployments.progress import ConfigProgress
from deployments.resolve import load_scenario
from schema.scenario import ScenarioError


class UpState(BaseModel):
    """What `parallax up` left running, as recorded in its state file."""
    name: str
    scenario: str
    mode: str                  # "local" (our detached Ray) | "attached" (RAY_ADDRESS)
    status: str                # "starting" | "ready" | "failed"
    pid: int | None = None
    ray_address: str | None = None
    temp_dir: str | None = None
    url: str | None = None
    ingress_urls: list[str] = []   # the ingress replicas' own addresses (direct ingress): the cheaper path
    metrics_url: str | None = None
    log: str | None = None
    error: str | None = None
    placements: dict[str, list[dict[str, Any]]] = {}
    progress: list[str] = []   # while starting: each configuration's state (progress.ConfigProgress.line)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> "UpState":
        return cls.model_validate(json.loads(path.read_text()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m deployments.daemon")
    ap.add_argument("state_file", type=Path)
    ap.add_argument("scenario")
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--metrics-port", type=int)
    ap.add_argument("--timeout", type=float, default=None, help="default: the scenario's deploy timeout")
    a = ap.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    leftovers = snapshot_leftovers()  # vLLM's shared-memory files present before this run are not ours
    temp_dir = Path(tempfile.mkdtemp(prefix="parallax-ray-"))  # short: Ray's socket paths have a length limit
    state = UpState.read(a.state_file).model_copy(update={"pid": os.getpid(), "temp_dir": str(temp_dir)})
    state.write(a.state_file)
    try:

        resolved = load_scenario(a.scenario, serving=True)
        metrics_port = a.metrics_port if a.metrics_port is not None else resolved.scenario.server.metrics_port
        address = start_local_ray(resolved, temp_dir / "ray", metrics_port)
        def record(progress: list[ConfigProgress]) -> None:
            state.model_copy(update={"progress": [p.line() for p in progress]}).write(a.state_file)

        info = deploy(resolved, host=a.host, port=a.port, timeout_s=a.timeout, on_progress=record)
        state = state.model_copy(update={
            "status": "ready", "ray_address": address, "url": info.url, "ingress_urls": info.ingress_urls,
            "metrics_url": f"http://127.0.0.1:{metrics_port}/metrics",
            "placements": {k: [vars(p) for p in v] for k, v in info.placements.items()}})
        state.write(a.state_file)
        stop.wait()
        teardown()
    except (ScenarioError, RuntimeError, OSError, ValueError) as e:
        state.model_copy(update={"status": "failed", "error": str(e)}).write(a.state_file)
        raise SystemExit(1) from None
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        remove_leftovers(leftovers)
        if stop.is_set():
            a.state_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
