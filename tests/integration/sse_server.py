"""A real OpenAI-style SSE server for tests: streams tokens at known times and logs its own timestamps.

Behaviour is chosen by the request's SLA class (header x-sla-class):
- any ordinary name: stream `max_tokens` tokens, one per event, first after `ttft_s`, then every `itl_s`;
- "multi": three tokens per event ("a b c"), usage only at the end (coalescing server);
- "err500" / "e401" / "e404": that HTTP error;
- "drop": two tokens, then the connection is cut;
- "errevent": two tokens, then an OpenAI error event and [DONE] (an engine that failed under the request);
- "hang": never answers (for client timeouts);
- "flaky": by request number: every 3rd gets a 500, every 5th is cut, every 7th hangs 0.3 s first.
"""

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class ServerLog:
    """Server-side perf_counter timestamps per request id: arrival, and each token event written."""

    arrived: dict[str, float] = field(default_factory=dict)
    events: dict[str, list[float]] = field(default_factory=dict)
    count: int = 0


class SSEServer:
    """Run in a thread with its own event loop, on 127.0.0.1 and a free port."""

    def __init__(self, ttft_s: float = 0.02, itl_s: float = 0.01, config: str = "cfg-a", model_field: str = "m1",
                 send_config_header: bool = True):
        self.ttft_s, self.itl_s, self.config = ttft_s, itl_s, config
        self.model_field, self.send_config_header = model_field, send_config_header
        self.log = ServerLog()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "SSEServer":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._runner is not None
            await self._runner.cleanup()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:  # handlers still sleeping ("hang")
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/log", self._log)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    async def _log(self, request: web.Request) -> web.Response:
        return web.json_response({"arrived": self.log.arrived, "events": self.log.events, "count": self.log.count})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model_field}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        body = await request.json()
        rid = request.headers.get("x-request-id", str(self.log.count))
        self.log.count += 1
        n = self.log.count
        self.log.arrived[rid] = arrived
        cls = request.headers.get("x-sla-class", "")
        chat = request.path.endswith("chat/completions")
        if cls == "flaky":
            cls = "err500" if n % 3 == 0 else "drop" if n % 5 == 0 else "late" if n % 7 == 0 else ""
        if cls in ("err500", "e401", "e404"):
            status = {"err500": 500, "e401": 401, "e404": 404}[cls]
            return web.json_response({"error": {"message": f"test error {status}"}}, status=status)
        if cls == "hang":
            await asyncio.sleep(3600)
        if cls == "late":
            await asyncio.sleep(0.3)
        headers = {"Content-Type": "text/event-stream"}
        if self.send_config_header:
            headers["x-parallax-config"] = self.config
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        per_event = 3 if cls == "multi" else 1
        max_tokens = int(body["max_tokens"])
        n_events = 2 if cls in ("drop", "errevent") else -(-max_tokens // per_event)
        continuous = cls != "multi" and body.get("stream_options", {}).get("continuous_usage_stats")
        prompt_tokens = len((body.get("prompt") or body["messages"][0]["content"]).split())
        times: list[float] = []
        self.log.events[rid] = times
        start = arrived
        sent = 0
        for i in range(n_events):
            due = start + self.ttft_s + i * self.itl_s
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            k = min(per_event, max_tokens - sent)
            sent += k
            text = " ".join(["tok"] * k) + " "
            choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
            last = sent == max_tokens
            choice["finish_reason"] = "length" if last else None
            ev: dict = {"model": self.model_field, "choices": [choice]}
            if continuous:
                ev["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": sent}
            await resp.write(f"data: {json.dumps(ev)}\n\n".encode())
            times.append(time.perf_counter())
        if cls == "drop":
            assert request.transport is not None
            request.transport.close()
            return resp
        if cls == "errevent":
            error = {"error": {"message": "engine error: test", "type": "server_error", "code": 500}}
            await resp.write(f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode())
            await resp.write_eof()
            return resp
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sent, "total_tokens": prompt_tokens + sent}
        await resp.write(f"data: {json.dumps({'model': self.model_field, 'choices': [], 'usage': usage})}\n\n"
                         .encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@contextlib.contextmanager
def sse_server_process(ttft_s: float, itl_s: float) -> Iterator[str]:
    """The server in its own process (so its timing does not share a GIL with the client); yields its URL."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__)), "--ttft", str(ttft_s), "--itl", str(itl_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.stdin.close()
        proc.wait(10)


def main() -> None:
    """Run standalone (own process, so its timing does not share a GIL with the client): prints the URL."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--ttft", type=float, default=0.02)
    ap.add_argument("--itl", type=float, default=0.01)
    a = ap.parse_args()
    with SSEServer(ttft_s=a.ttft, itl_s=a.itl) as srv:
        print(srv.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


if __name__ == "__main__":
    main()
