"""The README's real-vLLM run on a fresh checkout: `git clone` of the committed HEAD, the project's .venv and
tiny model linked in (no reinstall), then exactly `parallax run scenarios/cpu-vllm-tiny.yaml` there.

It must exit 0 and write a run folder holding a record of every request the scenario's load sends and a
report, and leave nothing running: every process the run started (each inherits its own TMPDIR, so they are
told apart from other runs on the machine) has ended, and no vLLM shared-memory segment or temp file is
left. The time it took is printed (FIGURE), with what stayed in the run's temp folder (torch inductor's
header cache; vLLM's IPC sockets, which engines killed at teardown do not unlink).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.resolve import load_scenario
from loadgen.plan import Workload, build_plan
from loadgen.records import RECORDS_FILE, read_records
from tests.support.vllm_tier import REPO, TINY_MODEL, Residue
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

README_COMMAND = ["parallax", "run", "scenarios/cpu-vllm-tiny.yaml"]
RUN_DEADLINE_S = 1800  # three vLLM engines start on 2 shared cores: minutes each


def _started_by(tmpdir: Path) -> list[str]:
    """Live processes whose environment carries TMPDIR=`tmpdir`: the run and everything it started."""
    needle = f"TMPDIR={tmpdir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(f"{proc.name}: " + (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160])
        except OSError:
            continue
    return found


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """A fresh clone of the committed HEAD with the project's .venv and tiny model linked in."""
    assert (TINY_MODEL / "config.json").exists(), f"no tiny model in {TINY_MODEL}: run `make setup` first"
    repo = tmp_path / "parallax"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(repo)], check=True, timeout=120)
    (repo / ".venv").symlink_to((REPO / ".venv").resolve())
    (repo / ".cache").mkdir()
    (repo / ".cache" / "tiny-llama").symlink_to(TINY_MODEL.resolve())
    yield repo


@pytest.mark.timeout(RUN_DEADLINE_S + 300)   # the run's own deadline governs, not the suite's 600 s
def test_the_readme_vllm_run_works_on_a_fresh_checkout(checkout: Path) -> None:
    before = Residue.now()
    tmpdir = Path(tempfile.mkdtemp(prefix="pxf", dir="/tmp"))  # short: Ray's socket paths under it are limited
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    # the clone's code, not the editable install's; the run's processes recognisable by their TMPDIR
    env |= {"PYTHONPATH": str(checkout), "TMPDIR": str(tmpdir), "PATH": f"{checkout / '.venv' / 'bin'}:{env['PATH']}",
            "VLLM_CACHE_ROOT": str(REPO / ".cache" / "vllm"),   # reuse what earlier vLLM runs compiled
            "TORCHINDUCTOR_CACHE_DIR": str(REPO / ".cache" / "inductor")}
    t0 = time.monotonic()
    try:
        run = subprocess.run(README_COMMAND, cwd=checkout, env=env, capture_output=True, text=True,
                             timeout=RUN_DEADLINE_S)
        took = time.monotonic() - t0
        output = run.stdout[-3000:] + run.stderr[-3000:]
        assert run.returncode == 0, output

        (folder,) = sorted((checkout / "runs").glob("cpu-vllm-tiny-*"))
        resolved = load_scenario(checkout / "scenarios" / "cpu-vllm-tiny.yaml")
        classes = list(resolved.scenario.classes)
        planned = {p.request_id for step in build_plan(classes, resolved.scenario.load, Workload(classes))
                   for p in step.requests}
        records = read_records(folder / RECORDS_FILE)
        ids = [r.request_id for r in records]
        assert len(ids) == len(set(ids)), "a request recorded twice"
        assert set(ids) == planned, f"{len(planned)} planned, {len(ids)} recorded"
        assert (folder / "report.html").stat().st_size > 0
        ok = sum(r.status == "ok" for r in records)
        assert ok > 0, "not one request was served"

        wait_until(lambda: not _started_by(tmpdir), 60, lambda: f"the run's processes to end: {_started_by(tmpdir)}")
        left = Residue.now().new_since(before).files  # its processes: other runs' vLLM may be running
        assert not left, f"shared-memory segments or vLLM temp files left: {sorted(left)}"
        # what stays in the temp folder is counted, not refused: torch inductor's precompiled headers there are
        # a cache meant to outlive the run; vLLM's ZMQ IPC sockets (uuid names) outlive engines killed at teardown
        sockets = [p for p in tmpdir.rglob("*") if p.is_socket()]
        files = [p for p in tmpdir.rglob("*") if p.is_file()]
        print(f"\nFIGURE readme-vllm-run: took_s={took:.0f}, records={len(records)}, ok={ok}, "
              f"left_in_tmpdir: sockets={len(sockets)}, files={len(files)} "
              f"({sorted({str(p.relative_to(tmpdir)).split('/')[0] for p in files})}), "
              f"by_config={ {c: sum(r.config == c for r in records) for c in sorted({r.config for r in records})} }",
              flush=True)
    finally:
        for line in _started_by(tmpdir):  # only what this test started
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        shutil.rmtree(tmpdir, ignore_errors=True)
