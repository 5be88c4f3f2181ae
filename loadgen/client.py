"""Async streaming client for OpenAI-compatible /v1/completions and /v1/chat/completions (aiohttp).

Timing: the send time is taken just before the request is handed to aiohttp; each SSE event is
time-stamped as its line arrives, before it is parsed. A chunk may carry several tokens (servers
coalesce): its token count comes from vLLM's continuous usage stats when present, else from the
text (tokenizer or word count), and the per-chunk counts are scaled to the final usage total.
"""

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from loadgen.errors import LoadError
from loadgen.records import UNKNOWN_CONFIG, RequestRecord, Status
from loadgen.wire import (
    CLASS_HEADER,
    CONFIG_HEADER,
    REPLICA_HEADER,
    REQUEST_ID_HEADER,
    SERVER_TPOT_MS,
    SERVER_TTFT_MS,
)

Api = Literal["completions", "chat"]

_HINTS = {
    401: "the server wants credentials; pass --api-key (or set OPENAI_API_KEY)",
    403: "the server refused these credentials; check --api-key",
    404: "check --target (the server's base URL, e.g. http://127.0.0.1:8000) and --model (a model it serves, "
         "or auto on the Parallax ingress)",
    400: "the server rejected the request body",
}


class Clock:
    """perf_counter for durations, mapped to Unix epoch seconds for records; starts now, or at `epoch`
    (the start load generator workers share)."""

    def __init__(self, epoch: float | None = None) -> None:
        perf, now = time.perf_counter(), time.time()
        self.epoch0 = now if epoch is None else epoch
        self.perf0 = perf + (self.epoch0 - now)

    def epoch(self, perf: float) -> float:
        return self.epoch0 + (perf - self.perf0)


@dataclass
class Planned:
    """One request of the plan: when to send it and what to ask."""

    request_id: str
    at_s: float            # seconds after the run's start (perf clock)
    sla_class: str
    prompt_tokens: int
    max_tokens: int
    rate_step: int
    offered_rate: float | None
    concurrency: int | None = None
    warmup: bool = False
    phase: str | None = None   # the load phase that sends it (load.phases)


@dataclass
class _Stream:
    """What one request collected so far (a record is built from it whatever happened)."""

    send: float | None = None
    config: str = ""
    http_status: int | None = None
    chunk_times: list[float] = field(default_factory=list)
    chunk_tokens: list[float] = field(default_factory=list)
    end: float | None = None
    usage_prompt: int | None = None
    usage_completion: int | None = None
    server_ttft_s: float | None = None
    server_tpot_s: float | None = None
    replica: str | None = None
    finished: bool = False
    status: Status = "ok"
    error: str | None = None


def http_error_text(status: int, reason: str | None, body: str) -> str:
    hint = _HINTS.get(status) or ("server error" if status >= 500 else "")
    body = " ".join(body.split())[:300]
    return f"HTTP {status} {reason or ''}".rstrip() + (f": {hint}" if hint else "") + (f" — {body}" if body else "")


class ErrorEvent(Exception):
    """The server ended a stream with an OpenAI error event (its engine failed under the request, say)."""


class StreamingClient:
    """Sends planned requests and turns each into exactly one RequestRecord."""

    def __init__(self, target: str, *, model: str = "auto", api: Api = "completions", timeout_s: float = 120.0,
                 api_key: str | None = None, count_tokens: Callable[[str], int] = lambda t: len(t.split()),
                 clock: Clock | None = None, extra_body: dict[str, Any] | None = None):
        self.targets = [t.strip().rstrip("/") for t in target.split(",")]  # several: taken in turn
        self.target = ",".join(self.targets)
        path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
        self.urls = [t + path for t in self.targets]
        self._turn = 0
        self.model = model
        self.api = api
        self.timeout_s = timeout_s
        self.count_tokens = count_tokens
        self.clock = clock or Clock()
        self.extra_body = extra_body or {}
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "StreamingClient":
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def check(self, timeout_s: float = 5.0) -> None:
        """Fail early, with a clear message, when a target cannot be reached at all.

        This also opens the connections the first requests will reuse, so they pay no connect time.
        """
        assert self._session is not None, "use the client as an async context manager"
        for target in self.targets:
            try:
                async with asyncio.timeout(timeout_s), self._session.get(target + "/v1/models",
                                                                         headers=self.headers) as resp:
                    await resp.read()
            except aiohttp.ClientConnectorError as e:
                raise LoadError(f"cannot reach {target}: {_reason(e)}; is the server running, "
                                "and is --target right?") from None
            except (TimeoutError, aiohttp.ClientError) as e:
                raise LoadError(f"cannot reach {target}: {type(e).__name__} {e}; is the server running?") from None

    def body(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        b: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "min_tokens": max_tokens,
                             "ignore_eos": True, "temperature": 0.0, "stream": True,
                             "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
        if self.api == "chat":
            b["messages"] = [{"role": "user", "content": prompt}]
        else:
            b["prompt"] = prompt
        return b | self.extra_body

    async def send(self, p: Planned, prompt: str, scheduled_perf: float,
                   sink: Callable[[RequestRecord], None]) -> None:
        """Send one request now; `sink` receives its record exactly once, also on cancellation."""
        s = _Stream()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._exchange(p, prompt, s)
        except TimeoutError:
            s.status, s.error = "timeout", f"no complete response within {self.timeout_s:g} s (load.timeout_s)"
        except asyncio.CancelledError:
            s.status, s.error = "cancelled", "run stopped before the response completed"
            sink(self._record(p, s, scheduled_perf))
            raise
        except aiohttp.ClientConnectorError as e:
            s.status, s.error = "error", f"cannot connect to {self.target}: {_reason(e)}"
        except (aiohttp.ClientError, OSError) as e:
            what = type(e).__name__
            s.status = "error"
            s.error = f"connection dropped after {len(s.chunk_times)} chunks ({what}: {e})" if s.send else str(e)
        except ErrorEvent as e:
            s.status, s.error = "error", f"the server's error event after {len(s.chunk_times)} chunks: {e}"
        except (ValueError, KeyError, TypeError, IndexError) as e:
            s.status, s.error = "error", f"malformed stream event: {e}"
        except Exception as e:  # whatever else went wrong, the request still gets its one record
            s.status, s.error = "error", f"{type(e).__name__}: {e}"
        sink(self._record(p, s, scheduled_perf))

    async def _exchange(self, p: Planned, prompt: str, s: _Stream) -> None:
        assert self._session is not None, "use the client as an async context manager"
        headers = {CLASS_HEADER: p.sla_class, REQUEST_ID_HEADER: p.request_id, **self.headers}
        body = self.body(prompt, p.max_tokens)
        s.send = time.perf_counter()
        url = self.urls[self._turn % len(self.urls)]
        self._turn += 1
        async with self._session.post(url, json=body, headers=headers) as resp:
            s.http_status = resp.status
            s.config = resp.headers.get(CONFIG_HEADER, "")
            s.replica = resp.headers.get(REPLICA_HEADER)
            if resp.status != 200:
                text = await resp.text(errors="replace")
                s.end = time.perf_counter()
                s.status, s.error = "error", http_error_text(resp.status, resp.reason, text)
                return
            await self._read_events(resp, s)
        if not s.finished:
            s.status = "error"
            s.error = (f"stream ended without [DONE] or finish_reason after {len(s.chunk_times)} chunks"
                       + ("" if s.chunk_times else "; is the server streaming server-sent events (data: lines)?"))

    async def _read_events(self, resp: aiohttp.ClientResponse, s: _Stream) -> None:
        """Split the body into SSE events as it arrives; an event is stamped when its last byte is read."""
        buf = b""
        async for piece in resp.content.iter_any():
            now = time.perf_counter()
            buf += piece
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            while (end := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:end], buf[end + 2:]
                if self._on_event(event, now, s):
                    return
        if buf.strip():
            self._on_event(buf, time.perf_counter(), s)

    def _on_event(self, event: bytes, now: float, s: _Stream) -> bool:
        """Take one SSE event into the stream state; True at [DONE]."""
        data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return False
        if data == b"[DONE]":
            s.end, s.finished = now, True
            return True
        ev = json.loads(data)
        if "error" in ev:
            err = ev["error"]
            raise ErrorEvent(err.get("message", err) if isinstance(err, dict) else err)
        if not s.config and ev.get("model"):
            s.config = str(ev["model"])
        usage = ev.get("usage") or {}
        if usage.get("prompt_tokens") is not None:
            s.usage_prompt = int(usage["prompt_tokens"])
        if usage.get(SERVER_TTFT_MS) is not None:   # the Parallax server's own timing (engine clock)
            s.server_ttft_s = float(usage[SERVER_TTFT_MS]) / 1e3
        if usage.get(SERVER_TPOT_MS) is not None:
            s.server_tpot_s = float(usage[SERVER_TPOT_MS]) / 1e3
        choices = ev.get("choices") or []
        text = ""
        if choices:
            c = choices[0]
            text = (c.get("delta") or {}).get("content") or "" if self.api == "chat" else c.get("text") or ""
            if c.get("finish_reason"):
                s.finished = True
        if usage.get("completion_tokens") is not None:
            total = int(usage["completion_tokens"])
            if choices and total > (s.usage_completion or 0):
                s.chunk_times.append(now)
                s.chunk_tokens.append(total - (s.usage_completion or 0))
            s.usage_completion = total
        elif text:
            s.chunk_times.append(now)
            s.chunk_tokens.append(max(1, self.count_tokens(text)))
        s.end = now
        return False

    def _record(self, p: Planned, s: _Stream, scheduled_perf: float) -> RequestRecord:
        """The request's record, made the moment it ended or failed."""
        ended = s.end if s.finished and s.end is not None else time.perf_counter()
        ttft = e2e = tpot = None
        itl: list[float] = []
        out_tokens = s.usage_completion if s.usage_completion is not None else round(sum(s.chunk_tokens))
        if s.send is not None and s.chunk_times:
            ttft = s.chunk_times[0] - s.send
            e2e = (s.end or s.chunk_times[-1]) - s.send
            if out_tokens > 1:
                tpot = (e2e - ttft) / (out_tokens - 1)
            itl = _gaps(s.chunk_times, s.chunk_tokens, out_tokens)
        elif s.send is not None and s.end is not None:
            e2e = s.end - s.send
        return RequestRecord(
            request_id=p.request_id, sla_class=p.sla_class, config=s.config or UNKNOWN_CONFIG, model=self.model,
            rate_step=p.rate_step, offered_rate=p.offered_rate, concurrency=p.concurrency, warmup=p.warmup,
            phase=p.phase, scheduled_time=self.clock.epoch(scheduled_perf),
            send_time=self.clock.epoch(s.send) if s.send is not None else None,
            end_time=self.clock.epoch(ended) if s.send is not None else None,
            ttft_s=ttft, tpot_s=tpot if s.status == "ok" else None, itl_s=itl,
            e2e_s=e2e if s.status == "ok" else None,
            prompt_tokens=s.usage_prompt if s.usage_prompt is not None else p.prompt_tokens,
            planned_prompt_tokens=p.prompt_tokens, output_tokens=out_tokens, max_tokens=p.max_tokens,
            status=s.status, server_ttft_s=s.server_ttft_s, server_tpot_s=s.server_tpot_s, replica=s.replica,
            http_status=s.http_status, error=s.error,
        )


def _reason(e: aiohttp.ClientConnectorError) -> str:
    return os.strerror(e.os_error.errno) if e.os_error.errno else str(e.os_error)


def _gaps(times: list[float], tokens: list[float], total: int) -> list[float]:
    """Inter-token gaps: a chunk of k tokens arriving g after the previous one gives k gaps of g/k.

    Chunk token counts are first scaled to the usage total. Extra tokens of the first chunk come
    with the first token, so they add no gap: the gaps sum to (last chunk − first chunk).
    """
    est = sum(tokens)
    scale = total / est if est > 0 and total > 0 else 1.0
    out: list[float] = []
    for i in range(1, len(times)):
        k = max(1, round(tokens[i] * scale))
        g = (times[i] - times[i - 1]) / k
        out.extend([round(g, 7)] * k)
    return out
