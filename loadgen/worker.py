"""A load generator worker: sends its share of the plan and reports every event to the parent (fleet.py).

Events are lines, on a pipe (a process) or in batches (a Ray actor, ray_worker.py):

    Y             ready: the target answered the preflight; waiting for the shared start
    F <message>   failed before starting (a LoadError's message)
    S <json>      a request launched: its plan entry and times, so that a worker killed before the
                  answer still leaves a record of it
    R <json>      a finished request's record, scored against its class's SLO
    E <json>      the end: {"interrupted": bool}

A process worker writes each line with write(2) as it happens, so all it said before being killed
reaches the parent. `python -m loadgen.worker FD` reads a length-prefixed pickled Share on stdin, then
the control lines `start <epoch>` and `stop`; SIGINT, SIGTERM and the end of stdin stop it too.
"""

import asyncio
import json
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadgen.client import Clock, Planned, StreamingClient
from loadgen.errors import LoadError
from loadgen.plan import Workload
from loadgen.prompts import PromptFactory, load_tokenizer
from loadgen.records import RequestRecord
from loadgen.sender import Sender, drive, event_loop_factory, prompt_rng, raise_fd_limit
from loadgen.split import Share

READY, FAILED, LAUNCHED, RECORD, END = b"Y", b"F", b"S", b"R", b"E"
LENGTH = struct.Struct("!Q")  # the pickled Share's length on stdin


def line(kind: bytes, payload: str = "") -> bytes:
    return kind + b" " + payload.encode() + b"\n" if payload else kind + b"\n"


async def run_share(share: Share, emit: Callable[[bytes], None], started: "asyncio.Future[float]",
                    stop: asyncio.Event) -> None:
    """Preflight, wait for the shared start epoch, send the share; every event goes to `emit`."""
    try:
        prompts = PromptFactory(load_tokenizer(Path(share.tokenizer)) if share.tokenizer else None, seed=share.seed)
        workload = Workload(share.classes, share.base_dir)
    except LoadError as e:
        emit(line(FAILED, str(e)))
        return
    raise_fd_limit()
    async with StreamingClient(share.target, model=share.model, api=share.api, timeout_s=share.timeout_s,
                               api_key=share.api_key, count_tokens=prompts.count) as client:
        try:
            await client.check()
        except LoadError as e:
            emit(line(FAILED, str(e)))
            return
        emit(line(READY))
        waiting: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait([started, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not started.done():
            emit(line(END, json.dumps({"interrupted": True})))
            return
        client.clock = clock = Clock(started.result())

        def launched(p: Planned, scheduled_perf: float) -> None:
            emit(line(LAUNCHED, json.dumps({**vars(p), "scheduled_time": clock.epoch(scheduled_perf),
                                            "send_time": clock.epoch(time.perf_counter())})))

        def record(r: RequestRecord) -> None:
            emit(line(RECORD, r.model_dump_json()))

        sender = Sender(client, prompts, workload, share.slos, record, prompt_rng(share.seed, share.index),
                        share.time_scale, on_launch=launched)
        await asyncio.sleep(max(0.0, clock.perf0 - time.perf_counter()))
        interrupted = stop.is_set() or await drive(sender, asyncio.Event(), share.steps, clock, {}, stop, None, None)
    emit(line(END, json.dumps({"interrupted": interrupted})))


def _write_all(fd: int) -> Callable[[bytes], None]:
    def emit(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return emit


def _read_exactly(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise SystemExit("loadgen.worker: stdin ended before the share arrived")
        out += chunk
    return out


async def _serve(share: Share, emit: Callable[[bytes], None]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    started: asyncio.Future[float] = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    control = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), os.fdopen(0, "rb", 0))

    async def listen() -> None:
        while command := await control.readline():
            word, _, arg = command.decode().strip().partition(" ")
            if word == "start" and not started.done():
                started.set_result(float(arg))
            elif word == "stop":
                stop.set()
        stop.set()  # the parent went away

    listener = asyncio.create_task(listen())
    try:
        await run_share(share, emit, started, stop)
    finally:
        listener.cancel()


def main() -> None:
    fd = int(sys.argv[1])
    share: Share = pickle.loads(_read_exactly(0, LENGTH.unpack(_read_exactly(0, LENGTH.size))[0]))
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_serve(share, _write_all(fd)))


if __name__ == "__main__":
    main()
