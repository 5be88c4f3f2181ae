"""A small client for Prometheus's HTTP query API, shared by the controller and the dashboard checks.

Every failure (unreachable, slow, rejected query, malformed answer) surfaces as one exception type,
`PrometheusError`, with a message that says what happened and what to do. Each call is bounded by a
total deadline, so a server that accepts but never (or only slowly) answers cannot hang the caller.
"""

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx

from monitoring.duration import prometheus_duration


class PrometheusError(Exception):
    """Prometheus could not answer a query; the message is meant for the user."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant-query answer."""

    labels: dict[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class Series:
    """One series of a range-query answer."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


def _float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.nan


def parse_answer(payload: object, what: str) -> Any:
    """Check the API envelope (`status`, `data`) and return `data`; raise PrometheusError otherwise."""
    if not isinstance(payload, dict) or "status" not in payload:
        raise PrometheusError(f"{what}: the answer is not a Prometheus API response")
    if payload["status"] != "success":
        kind = payload.get("errorType", "error")
        raise PrometheusError(f"{what}: Prometheus refused it ({kind}): {payload.get('error', 'no detail')}")
    return payload.get("data")


def parse_vector(data: Any, what: str) -> list[Sample]:
    """Samples of an instant query (a scalar answer becomes one sample without labels)."""
    try:
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return [Sample({}, _float(result[1]), float(result[0]))]
        if kind != "vector":
            raise PrometheusError(f"{what}: expected an instant vector, got a {kind}")
        return [Sample(dict(r["metric"]), _float(r["value"][1]), float(r["value"][0])) for r in result]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise PrometheusError(f"{what}: malformed query result ({e!r})") from None


def parse_matrix(data: Any, what: str) -> list[Series]:
    """Series of a range query."""
    try:
        if data["resultType"] != "matrix":
            raise PrometheusError(f"{what}: expected a range vector, got a {data['resultType']}")
        return [Series(dict(r["metric"]), [(float(t), _float(v)) for t, v in r["values"]]) for r in data["result"]]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise PrometheusError(f"{what}: malformed query result ({e!r})") from None


def _describe(url: str, e: Exception, timeout_s: float) -> str:
    if isinstance(e, httpx.TimeoutException | TimeoutError):
        return f"Prometheus at {url} did not answer within {timeout_s:g} s; is it overloaded or stuck?"
    if isinstance(e, httpx.ConnectError):
        return (f"Prometheus at {url} is not reachable ({e or 'connection refused'}); start it with "
                "`parallax prometheus up` or set monitoring.prometheus_url")
    return f"Prometheus at {url}: {type(e).__name__}: {e}"


def _answer(status: int, body: bytes, what: str) -> Any:
    try:
        payload = json.loads(body)
    except ValueError:
        raise PrometheusError(f"{what}: HTTP {status}, not a Prometheus API answer ({body[:200]!r})") from None
    return parse_answer(payload, what)


class PromClient:
    """Blocking client. `timeout_s` bounds each call as a whole (connect + wait + transfer)."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s), trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PromClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str], what: str) -> Any:
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._http.stream("GET", path, params=params) as resp:
                body = b""
                for chunk in resp.iter_bytes():
                    body += chunk
                    if time.monotonic() > deadline:
                        raise TimeoutError
                return _answer(resp.status_code, body, what)
        except PrometheusError:
            raise
        except (httpx.HTTPError, TimeoutError, OSError) as e:
            raise PrometheusError(_describe(self.url, e, self.timeout_s)) from None

    def ready(self) -> bool:
        """True when Prometheus answers /-/ready with 200."""
        try:
            return self._http.get("/-/ready").status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """Instant query."""
        params = {"query": expr, "timeout": prometheus_duration(self.timeout_s)}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return parse_vector(self._get("/api/v1/query", params, f"query {expr!r}"), f"query {expr!r}")

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        """Range query from `start` to `end` (unix seconds) every `step_s`."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}",
                  "timeout": prometheus_duration(self.timeout_s)}
        what = f"range query {expr!r}"
        return parse_matrix(self._get("/api/v1/query_range", params, what), what)

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        """Values of a label, optionally only on the series a selector matches."""
        params = {"match[]": match} if match else {}
        data = self._get(f"/api/v1/label/{label}/values", params, f"label values of {label!r}")
        if not isinstance(data, list):
            raise PrometheusError(f"label values of {label!r}: malformed answer")
        return [str(v) for v in data]


class AsyncPromClient:
    """asyncio client with the same behaviour as PromClient."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(timeout_s), trust_env=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncPromClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _get(self, path: str, params: dict[str, str], what: str) -> Any:
        try:
            resp = await asyncio.wait_for(self._http.get(path, params=params), self.timeout_s)
        except (httpx.HTTPError, TimeoutError, OSError) as e:
            raise PrometheusError(_describe(self.url, e, self.timeout_s)) from None
        return _answer(resp.status_code, resp.content, what)

    async def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """Instant query."""
        params = {"query": expr, "timeout": prometheus_duration(self.timeout_s)}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return parse_vector(await self._get("/api/v1/query", params, f"query {expr!r}"), f"query {expr!r}")

    async def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        """Range query from `start` to `end` (unix seconds) every `step_s`."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}",
                  "timeout": prometheus_duration(self.timeout_s)}
        what = f"range query {expr!r}"
        return parse_matrix(await self._get("/api/v1/query_range", params, what), what)
