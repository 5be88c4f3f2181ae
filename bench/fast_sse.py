"""A fast OpenAI-style SSE server in its own process, for benchmarks: no delay, `tokens` one-token events
(`max_tokens` of the request when given), written at once.

    url, stop = start_fast_sse(tokens=8)    # http://127.0.0.1:PORT; stop() ends the process

It answers POST /v1/completions (SSE, then a usage event and [DONE]), GET /v1/models and GET /health,
so that it stands in for the Parallax ingress wherever a benchmark wants the floor of an HTTP exchange.
"""

import asyncio
import json
import multiprocessing as mp
from collections.abc import Callable
from multiprocessing.connection import Connection

from aiohttp import web

from loadgen.sender import raise_fd_limit
from loadgen.wire import CONFIG_HEADER


def _events(n: int) -> bytes:
    """n one-token events, the usage event and [DONE], as one body."""
    def event(data: dict) -> str:
        return f"data: {json.dumps(data)}\n\n"
    out = [event({"model": "bench", "choices": [{"index": 0, "text": " tok",
                                                 "finish_reason": "length" if i == n - 1 else None}]})
           for i in range(n)]
    out.append(event({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": n}}))
    return ("".join(out) + "data: [DONE]\n\n").encode()


def _serve(port_out: Connection, tokens: int) -> None:
    raise_fd_limit()   # every request in flight holds a connection (at 6,000 req/s the default 1,024 ran out)
    bodies: dict[int, bytes] = {}

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens") or tokens)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", CONFIG_HEADER: "bench"})
        await resp.prepare(request)
        await resp.write(bodies.get(n) or bodies.setdefault(n, _events(n)))   # one write: the server stays cheap
        return resp

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "bench"}]})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "configurations": ["bench"]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        app.router.add_get("/v1/models", models)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port_out.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def start_fast_sse(tokens: int = 8) -> tuple[str, Callable[[], None]]:
    """Start the server in a spawned process; returns its base URL and a function that stops it."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)   # not a Queue: no semaphore in /dev/shm
    proc = ctx.Process(target=_serve, args=(send, tokens), daemon=True)
    proc.start()
    if not receive.poll(30):
        proc.terminate()
        raise RuntimeError("the fast SSE server did not start within 30 s")
    url = f"http://127.0.0.1:{receive.recv()}"

    def stop() -> None:
        proc.terminate()
        proc.join(10)
    return url, stop
