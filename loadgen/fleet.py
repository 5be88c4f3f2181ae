"""The parent of N load generator workers: starts them (processes here, or Ray actors across a cluster's
nodes), gives them one start time, merges what they report, stops them on a signal, reports each.

Every record reaches the parent as its worker finishes it and goes through the one RecordSink, so the
records file, /metrics, the live view and the summary are those of one process that sent everything.
On a stop (SIGINT / SIGTERM, or a target that refuses everything) each worker cancels what it has in
flight and flushes those records before it ends. A worker that dies (killed, its node lost) is
reported as such; each request it launched without a record yet gets a `cancelled` record naming it,
and the others carry on.
"""

import asyncio
import contextlib
import fcntl
import json
import os
import pickle
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import ray

import loadgen
from loadgen.client import Clock
from loadgen.control import LoadControl
from loadgen.errors import LoadError
from loadgen.exporter import ClientMetrics
from loadgen.plan import StepPlan
from loadgen.progress import LiveView
from loadgen.ray_worker import LoadWorker
from loadgen.records import UNKNOWN_CONFIG, RequestRecord
from loadgen.sender import RecordSink, announce_step, record_partial_step, refresh_view
from loadgen.split import Share, split_plan
from loadgen.summary import WorkerReport
from loadgen.worker import END, FAILED, LAUNCHED, LENGTH, READY, RECORD
from schema.traffic import RAY_WORKER_CPUS

START_MARGIN_S = 0.5     # the shared start: this long after the last worker said it is ready
READY_TIMEOUT_S = 120.0  # imports, tokenizer and preflight of every worker must fit in this
STOP_GRACE_S = 15.0      # after a stop, how long workers get to flush their records before they are killed
PIPE_BYTES = 1 << 20     # a process worker's event pipe (Linux's default is 64 KiB)
READ_EVERY_S = 0.005     # how often the parent takes a process worker's events


class _Handle(Protocol):
    where: str

    def lines(self) -> AsyncIterator[bytes]: ...

    async def start(self, epoch: float) -> None: ...

    def stop(self) -> None: ...

    async def close(self, grace_s: float) -> str:
        """Wait for the end (killing after `grace_s`); how it ended, e.g. "exit 0", "killed by SIGKILL"."""
        ...

    def kill(self) -> str:
        """Kill it now, as a crash would (from any thread); what was done."""
        ...


class _Process:
    """`python -m loadgen.worker` on this machine: events on a pipe, control lines on its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process, events: int):
        self.proc, self.events = proc, events   # the read end of the events pipe (non-blocking)
        self.where = f"pid {proc.pid}"

    @classmethod
    async def spawn(cls, share: Share) -> "_Process":
        r, w = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        # the worker imports the same loadgen package as this process, wherever it comes from
        root = str(Path(loadgen.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "loadgen.worker", str(w),
                                                        stdin=asyncio.subprocess.PIPE, pass_fds=(w,), env=env)
        finally:
            os.close(w)
        data = pickle.dumps(share)
        assert proc.stdin is not None
        proc.stdin.write(LENGTH.pack(len(data)) + data)
        await proc.stdin.drain()
        os.set_blocking(r, False)
        return cls(proc, r)

    async def lines(self) -> AsyncIterator[bytes]:
        """Every READ_EVERY_S, what the pipe holds: the worker writes each event as it happens (so a kill
        loses none), and this side takes them in batches instead of waking for each one."""
        rest = b""
        try:
            while True:
                await asyncio.sleep(READ_EVERY_S)
                chunks, ended = [], False
                while True:
                    try:
                        chunk = os.read(self.events, PIPE_BYTES)
                    except BlockingIOError:
                        break
                    if not chunk:
                        ended = True
                        break
                    chunks.append(chunk)
                *whole, rest = (rest + b"".join(chunks)).split(b"\n")
                for raw in whole:
                    yield raw + b"\n"
                if ended:
                    return
        finally:
            os.close(self.events)

    def _send(self, command: str) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(command.encode() + b"\n")

    async def start(self, epoch: float) -> None:
        self._send(f"start {epoch!r}")

    def stop(self) -> None:
        self._send("stop")

    def kill(self) -> str:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        return f"killed the worker process (pid {self.proc.pid})"

    async def close(self, grace_s: float) -> str:
        try:
            await asyncio.wait_for(self.proc.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        rc = self.proc.returncode
        assert rc is not None
        return f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"


class _Actor:
    """A LoadWorker actor (ray_worker.py): events come back as batches of its streaming generator."""

    def __init__(self, actor: Any, share: Share, node: str):
        self.actor = actor
        self.where = f"node {node[:12]}"
        self.node = node
        self.error: str | None = None
        self._gen = actor.run.options(num_returns="streaming").remote(share)

    @classmethod
    async def spawn(cls, share: Share) -> "_Actor":
        actor = LoadWorker.options(scheduling_strategy="SPREAD").remote()  # type: ignore[attr-defined]
        return cls(actor, share, await actor.node.remote())

    async def lines(self) -> AsyncIterator[bytes]:
        try:
            async for ref in self._gen:
                for raw in await ref:
                    yield raw
        except ray.exceptions.RayError as e:
            self.error = f"the actor died ({type(e).__name__})"

    async def start(self, epoch: float) -> None:
        await self.actor.start.remote(epoch)

    def stop(self) -> None:
        self.actor.stop.remote()

    async def close(self, grace_s: float) -> str:
        ray.kill(self.actor)
        return self.error or "done"

    def kill(self) -> str:
        ray.kill(self.actor)
        return f"killed the worker actor ({self.where})"


@dataclass
class _Worker:
    index: int
    handle: _Handle
    share: Share
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: str | None = None
    launched: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> plan entry, until recorded
    sent: int = 0
    recorded: int = 0
    ended: bool = False
    interrupted: bool = False

    async def consume(self, sink: RecordSink) -> None:
        """Take the worker's events until its stream ends."""
        async for raw in self.handle.lines():
            kind, payload = raw[:1], raw[2:].rstrip(b"\n")
            if kind == RECORD:
                r = RequestRecord.model_validate_json(payload)
                self.launched.pop(r.request_id, None)
                self.recorded += 1
                sink.add(r, payload.decode())
            elif kind == LAUNCHED:
                entry = json.loads(payload)
                self.launched[entry["request_id"]] = entry
                self.sent += 1
            elif kind == READY:
                self.ready.set()
            elif kind == FAILED:
                self.failed = payload.decode()
                self.ready.set()
            elif kind == END:
                self.ended, self.interrupted = True, bool(json.loads(payload)["interrupted"])

    def orphans(self, how: str) -> list[RequestRecord]:
        """A record for each request launched without one (the worker died first)."""
        why = f"load generator worker {self.index} ({self.handle.where}) {how} before the response completed"
        out = [RequestRecord(
            request_id=e["request_id"], sla_class=e["sla_class"], config=UNKNOWN_CONFIG, model=self.share.model,
            rate_step=e["rate_step"], offered_rate=e["offered_rate"], concurrency=e["concurrency"],
            warmup=e["warmup"], phase=e["phase"], scheduled_time=e["scheduled_time"], send_time=e["send_time"],
            prompt_tokens=e["prompt_tokens"], planned_prompt_tokens=e["prompt_tokens"], max_tokens=e["max_tokens"],
            status="cancelled", error=why) for e in self.launched.values()]
        self.launched.clear()
        self.recorded += len(out)
        return out

    def report(self, how: str) -> WorkerReport:
        status: Literal["finished", "stopped", "failed", "died"] = (
            "failed" if self.failed else "died" if not self.ended else "stopped" if self.interrupted else "finished")
        return WorkerReport(index=self.index, where=self.handle.where, status=status,
                            detail=self.failed or how, planned=self.share.planned, sent=self.sent,
                            recorded=self.recorded)


async def _spawn(shares: list[Share], on: str) -> list[_Handle]:
    """Start every worker, or none: the ones started are ended when another cannot start."""
    if on == "ray":
        _check_ray(shares[0].workers)
    spawn: Callable[[Share], Awaitable[_Handle]] = _Process.spawn if on == "local" else _Actor.spawn
    started: list[_Handle | BaseException] = await asyncio.gather(*(spawn(s) for s in shares),
                                                                   return_exceptions=True)
    failed = next((e for e in started if isinstance(e, BaseException)), None)
    if failed is None:
        return [h for h in started if not isinstance(h, BaseException)]
    for h in started:
        if not isinstance(h, BaseException):
            h.stop()
            await h.close(STOP_GRACE_S)
    raise LoadError(f"a load generator worker could not start ({type(failed).__name__}: {failed})")


def _check_ray(workers: int) -> None:
    """Connected to a Ray cluster with room for the workers (connects to RAY_ADDRESS if need be)."""
    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):
            raise LoadError("load.workers_on: ray (--ray) needs a Ray cluster: set RAY_ADDRESS (`ray start --head` "
                            "prints it), or run local workers (--workers N without --ray)")
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    free = ray.available_resources().get("CPU", 0.0)
    need = workers * RAY_WORKER_CPUS
    if need > free:
        raise LoadError(f"load.workers: {workers} Ray workers need {need:g} CPUs but the cluster has "
                        f"{free:g} free; lower --workers or add nodes")


async def _all_ready(workers: list[_Worker], readers: list[asyncio.Task[None]], stop: asyncio.Event | None) -> bool:
    """Wait until every worker is ready (False: stopped first); a failed or vanished worker is a LoadError."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(w.ready.is_set() for w in workers):
        waits = [asyncio.ensure_future(w.ready.wait()) for w in workers if not w.ready.is_set()]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        await asyncio.wait([*waits, *[r for r in readers if not r.done()]],
                           timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
        for t in waits:
            t.cancel()
        if stop is not None and stop.is_set():
            return False
        for w, r in zip(workers, readers, strict=True):
            if r.done() and not w.ready.is_set():
                raise LoadError(f"load generator worker {w.index} ({w.handle.where}) ended before it was ready"
                                + (f": {getattr(w.handle, 'error', None)}" if getattr(w.handle, "error", None)
                                   else ""))
        if time.monotonic() >= deadline:
            slow = [str(w.index) for w in workers if not w.ready.is_set()]
            raise LoadError(f"load generator worker(s) {', '.join(slow)} not ready after {READY_TIMEOUT_S:g} s")
    failed = next((w for w in workers if w.failed), None)
    if failed is not None:
        raise LoadError(failed.failed or "a load generator worker failed")
    return True


async def _announce(plan: list[StepPlan], clock: Clock, metrics: ClientMetrics | None, view: LiveView | None) -> None:
    t0 = clock.perf0
    for s in plan:
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
        announce_step(s, len(plan), metrics, view)
        t0 += s.length_s


@dataclass(frozen=True)
class FleetResult:
    stopped: bool                  # stopped early (a signal, or a target that refuses everything)
    reports: list[WorkerReport]
    started_at: float | None       # the schedule's start (Unix time) the workers shared; None: never started


async def run_fleet(share: Share, plan: list[StepPlan], on: str, sink: RecordSink, durations: dict[int, float],
                    stop: asyncio.Event | None, metrics: ClientMetrics | None, view: LiveView | None,
                    control: LoadControl | None = None) -> FleetResult:
    """Run the plan on `share.workers` workers (`on`: "local" | "ray"). Raises LoadError when a worker
    cannot start. Connects to RAY_ADDRESS (and disconnects after) when Ray workers are asked for and this
    process is not connected yet. `control` learns the start and may kill a worker."""
    owned = on == "ray" and not ray.is_initialized()
    try:
        return await _run(share, plan, on, sink, durations, stop, metrics, view, control)
    finally:
        if owned and ray.is_initialized():
            ray.shutdown()


async def _run(share: Share, plan: list[StepPlan], on: str, sink: RecordSink, durations: dict[int, float],
               stop: asyncio.Event | None, metrics: ClientMetrics | None, view: LiveView | None,
               control: LoadControl | None) -> FleetResult:
    shares = [replace(share, index=k, steps=steps) for k, steps in enumerate(split_plan(plan, share.workers))]
    handles = await _spawn(shares, on)
    workers = [_Worker(k, h, s) for k, (h, s) in enumerate(zip(handles, shares, strict=True))]
    readers = [asyncio.create_task(w.consume(sink)) for w in workers]
    helpers: list[asyncio.Future[Any]] = []
    stopped = False
    clock: Clock | None = None
    try:
        if not await _all_ready(workers, readers, stop):
            stopped = True
        else:
            epoch = time.time() + START_MARGIN_S
            await asyncio.gather(*(w.handle.start(epoch) for w in workers))
            clock = Clock(epoch)
            if control is not None:
                control.started(epoch, [w.handle.kill for w in workers])
            helpers = [asyncio.create_task(_announce(plan, clock, metrics, view)),
                       asyncio.create_task(refresh_view(view))]
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(sink.halt.wait())]
            if stop is not None:
                waiters.append(asyncio.ensure_future(stop.wait()))
            helpers += waiters
            all_ended: asyncio.Future[Any] = asyncio.gather(*readers)
            await asyncio.wait([all_ended, *waiters], return_when=asyncio.FIRST_COMPLETED)
            stopped = any(t.done() for t in waiters)
    finally:
        if stopped or not all(r.done() for r in readers):
            for w in workers:
                w.handle.stop()
            await asyncio.wait(readers, timeout=STOP_GRACE_S)
        ends = await asyncio.gather(*(w.handle.close(STOP_GRACE_S) for w in workers))
        await asyncio.wait(readers, timeout=5.0)  # the rest of a pipe after its writer ended
        for t in [*helpers, *readers]:
            t.cancel()
        await asyncio.gather(*helpers, *readers, return_exceptions=True)
    broken = next((r.exception() for r in readers if r.done() and not r.cancelled() and r.exception()), None)
    if broken is not None:
        raise broken
    for w, how in zip(workers, ends, strict=True):
        for r in w.orphans(how if not w.ended else "was stopped"):
            sink.add(r)
    if stopped and clock is not None:
        record_partial_step(plan, durations, clock)
    elif not stopped:
        durations.update({s.index: s.duration_s for s in plan})
    return FleetResult(stopped, [w.report(how) for w, how in zip(workers, ends, strict=True)],
                       clock.epoch0 if clock is not None else None)
