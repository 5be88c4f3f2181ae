"""Load generator workers (processes) against a real local SSE server: the one-process schedule, merged
records / summary / metrics, a signal flushes every worker, a killed worker is reported and loses nothing."""

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from loadgen.control import LoadControl
from loadgen.plan import Workload, build_plan
from loadgen.records import META_FILE, read_records
from loadgen.runner import run_load
from loadgen.summary import LoadSummary, summarize
from schema.traffic import SLO, ConstantArrival, FixedLength, LoadConfig, PoissonArrival, TrafficClass
from tests.integration.sse_server import SSEServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def classes(n_out: int = 4) -> list[TrafficClass]:
    return [TrafficClass(name=name, share=share, slo=SLO(ttft_ms=5000), input=FixedLength(value=8),
                         output=FixedLength(value=n_out)) for name, share in (("chat", 0.6), ("batch", 0.4))]


def figures(s: LoadSummary) -> list[tuple]:
    """What the summary says about traffic, not timing: per group counts, SLO verdicts and goodput."""
    return [(g.rate_step, g.config, g.sla_class, g.count, g.ok, g.errors, g.slo_attainment, round(g.goodput, 9),
             g.duration_s) for g in [*s.groups, *s.overall]]


def worker_pids() -> list[int]:
    """This process's load generator worker processes."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid() \
                    and b"loadgen.worker" in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except (OSError, ValueError):
            continue
    return out


async def test_two_workers_send_the_one_process_schedule_and_merge_like_it(tmp_path: Path) -> None:
    cs = classes()
    load = LoadConfig(arrival=PoissonArrival(rate=60), rates=[40, 80], duration_s=1.0, seed=7)
    plan = {r.request_id: r.at_s + sum(s.length_s for s in build_plan(cs, load, Workload(cs))[:step.index])
            for step in build_plan(cs, load, Workload(cs)) for r in step.requests}
    scraped: list[str] = []
    port: list[int] = []
    summaries = {}
    with SSEServer(ttft_s=0.01, itl_s=0.005) as srv:
        for workers in (1, 2):
            seen = [0]

            def on_record(_: object, seen: list[int] = seen, workers: int = workers) -> None:
                seen[0] += 1
                if workers == 2 and seen[0] == len(plan):   # the last record: the merged metrics have them all
                    scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port[0]}/metrics").read().decode())

            before = srv.log.count
            out = tmp_path / f"w{workers}"
            summaries[workers] = await run_load(srv.url, cs, load.model_copy(update={"workers": workers}), out,
                                                metrics_port=0 if workers == 2 else None, on_record=on_record,
                                                on_metrics_port=port.append)
            records = read_records(out)
            t0 = records[0].scheduled_time - plan[records[0].request_id]
            offsets = {r.request_id: r.scheduled_time - t0 for r in records}
            assert offsets == pytest.approx(plan, abs=1e-5)                  # the schedule, request for request
            assert srv.log.count - before == len(records) == len(plan)       # sent = recorded, each once
            assert set(srv.log.arrived) == set(plan)
            assert all(r.status == "ok" and r.slo_met for r in records)
            s = summaries[workers]
            assert s.records == s.sent == len(plan) and not s.interrupted
            assert s.model_dump(exclude={"workers"}) == summarize(records, {c.name: c.slo for c in cs},
                                                                  s.step_durations_s).model_dump(exclude={"workers"})
    assert figures(summaries[1]) == figures(summaries[2])
    assert summaries[1].workers == []
    reports = summaries[2].workers
    assert [(w.index, w.status) for w in reports] == [(0, "finished"), (1, "finished")]
    assert sorted(w.sent for w in reports) == [len(plan) // 2, len(plan) - len(plan) // 2]
    assert all(w.sent == w.recorded == w.planned for w in reports) and reports[0].where != reports[1].where
    total = sum(float(line.rsplit(" ", 1)[1]) for line in scraped[0].splitlines()
                if line.startswith("parallax_client_requests_total{"))
    assert total == len(plan)


def test_sigterm_flushes_every_worker(tmp_path: Path) -> None:
    with SSEServer(ttft_s=0.01, itl_s=0.05) as srv:  # 20 tokens: ~1 s each, so several are in flight
        cmd = [sys.executable, "-m", "controllers.cli.app", "load", "--target", srv.url, "--class",
               "a:share=1,in=8,out=20,ttft_ms=1000", "--arrival", "constant", "--rate", "10", "--duration", "30",
               "--workers", "2", "--out", str(tmp_path), "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: srv.log.count >= 25 or proc.poll() is not None, 60, "25 requests at the server", 0.05)
        proc.send_signal(signal.SIGTERM)     # to the parent only: it stops the workers
        out, err = proc.communicate(timeout=60)
        sent = set(srv.log.arrived)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err and "interrupted" in err
    records = read_records(tmp_path)
    assert {r.request_id for r in records} == sent and len(records) == len(sent) >= 25
    assert sum(r.status == "cancelled" for r in records) >= 4 and sum(r.status == "ok" for r in records) >= 4
    meta = (tmp_path / META_FILE).read_text()
    assert '"status": "stopped"' in meta and '"status": "died"' not in meta


async def test_a_killed_worker_is_reported_and_the_others_finish(tmp_path: Path) -> None:
    """Killed as the `kill_load_worker` fault does it: through the LoadControl the load hands out."""
    load = LoadConfig(arrival=ConstantArrival(rate=20), duration_s=2.0, workers=2)
    control = LoadControl()
    with SSEServer(ttft_s=0.01, itl_s=0.1) as srv:   # 10 tokens: ~1 s each
        async def kill_one() -> int:
            while len(srv.log.arrived) < 10:
                await asyncio.sleep(0.02)
            assert control.epoch is not None and control.workers == 2
            pids = worker_pids()
            done = control.kill_worker(1)
            killed = next(pid for pid in pids if done == f"killed the worker process (pid {pid})")
            with pytest.raises(ValueError, match="no load generator worker 2: the load runs 2 workers"):
                control.kill_worker(2)
            return killed

        killer = asyncio.create_task(kill_one())
        summary = await run_load(srv.url, classes(n_out=10), load, tmp_path, control=control)
        killed = await killer
        sent = set(srv.log.arrived)
    records = read_records(tmp_path)
    assert sent <= {r.request_id for r in records}            # every request that reached the server has its record
    dead = next(w for w in summary.workers if w.where == f"pid {killed}")
    alive = next(w for w in summary.workers if w is not dead)
    assert (dead.status, dead.detail) == ("died", "killed by SIGKILL") and dead.sent < dead.planned
    assert dead.recorded == dead.sent                         # its in-flight requests got records too
    assert (alive.status, alive.sent, alive.recorded) == ("finished", alive.planned, alive.planned)
    orphans = [r for r in records if r.status == "cancelled"]
    assert orphans and all(f"worker {dead.index} (pid {killed}) killed by SIGKILL" in (r.error or "")
                           for r in orphans)
    assert sum(r.status == "ok" for r in records) >= alive.planned
    assert summary.sent == summary.records == dead.sent + alive.sent
