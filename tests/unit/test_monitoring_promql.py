"""The PromQL client: parses answers, and turns every failure into one clear PrometheusError, in bounded time.

Faults are injected with tiny local HTTP servers (a stopped port, a silent server, a trickling server).
"""

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from monitoring.ports import free_port
from monitoring.promql import AsyncPromClient, PromClient, PrometheusError, parse_answer, parse_matrix, parse_vector

Handler = Callable[[socket.socket], None]


@contextmanager
def fake_server(handle: Handler) -> Iterator[str]:
    """A TCP server on 127.0.0.1 answering each connection with `handle` in its own thread."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(2)
        for c in conns:
            c.close()
        srv.close()


def _send(conn: socket.socket, status: str, body: bytes, ctype: str = "application/json") -> None:
    conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)


def _reply(status: str, body: bytes, ctype: str = "application/json") -> Handler:
    def handle(conn: socket.socket) -> None:
        conn.recv(65536)
        _send(conn, status, body, ctype)
    return handle


def _silent(conn: socket.socket) -> None:
    conn.recv(65536)
    time.sleep(30)


def _trickle(conn: socket.socket) -> None:
    conn.recv(65536)
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(200):
            conn.sendall(b" ")
            time.sleep(0.2)
    except OSError:
        pass


def test_parses_vector_scalar_and_matrix() -> None:
    vec = {"resultType": "vector", "result": [{"metric": {"config": "tp8"}, "value": [10.5, "0.25"]},
                                              {"metric": {}, "value": [10.5, "NaN"]}]}
    samples = parse_vector(vec, "q")
    assert samples[0].labels == {"config": "tp8"} and samples[0].value == 0.25 and samples[0].timestamp == 10.5
    assert samples[1].value != samples[1].value  # NaN
    assert parse_vector({"resultType": "scalar", "result": [1.0, "3"]}, "q")[0].value == 3.0
    series = [{"metric": {"a": "b"}, "values": [[1, "1"], [2, "4"]]}]
    mat = parse_matrix({"resultType": "matrix", "result": series}, "q")
    assert mat[0].points == [(1.0, 1.0), (2.0, 4.0)]


def test_malformed_answers_raise_prometheus_error() -> None:
    with pytest.raises(PrometheusError, match="bad_data"):
        parse_answer({"status": "error", "errorType": "bad_data", "error": "parse error"}, "q")
    with pytest.raises(PrometheusError, match="not a Prometheus API response"):
        parse_answer([1, 2], "q")
    with pytest.raises(PrometheusError, match="malformed"):
        parse_vector({"resultType": "vector", "result": [{"metric": {}}]}, "q")
    with pytest.raises(PrometheusError, match="expected an instant vector"):
        parse_vector({"resultType": "matrix", "result": []}, "q")


def test_stopped_server_is_reported_as_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with PromClient(url, timeout_s=2) as c, pytest.raises(PrometheusError, match="not reachable") as e:
        c.query("up")
    assert time.monotonic() - t0 < 2
    assert url in str(e.value) and "parallax prometheus up" in str(e.value)
    assert not PromClient(url, timeout_s=1).ready()


def test_silent_server_times_out_within_the_deadline() -> None:
    with fake_server(_silent) as url, PromClient(url, timeout_s=0.5) as c:
        t0 = time.monotonic()
        with pytest.raises(PrometheusError, match=r"did not answer within 0\.5 s"):
            c.query_range("up", 0, 10, 1)
        assert time.monotonic() - t0 < 2


def test_trickling_server_cannot_stretch_a_call() -> None:
    """A server that keeps sending a byte at a time never trips the per-read timeout: the total deadline must."""
    with fake_server(_trickle) as url, PromClient(url, timeout_s=1.0) as c:
        t0 = time.monotonic()
        with pytest.raises(PrometheusError, match="did not answer within"):
            c.query("up")
        assert time.monotonic() - t0 < 3


def test_rejected_query_carries_prometheus_message() -> None:
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}).encode()
    with (fake_server(_reply("400 Bad Request", body)) as url, PromClient(url) as c,
          pytest.raises(PrometheusError, match="parse error") as e):
        c.query("sum(")
    assert "sum(" in str(e.value)


def test_non_api_answer_is_reported() -> None:
    answer = _reply("502 Bad Gateway", b"<html>proxy error</html>", "text/html")
    with fake_server(answer) as url, PromClient(url) as c, pytest.raises(PrometheusError, match="HTTP 502"):
        c.query("up")


def test_successful_query_and_label_values() -> None:
    answers = {b"/api/v1/query": {"resultType": "vector", "result": [{"metric": {"x": "1"}, "value": [1, "2"]}]},
               b"/api/v1/label/config/values": ["tp8", "pp8"]}

    def handle(conn: socket.socket) -> None:
        path = conn.recv(65536).split(b" ")[1].split(b"?")[0]
        _send(conn, "200 OK", json.dumps({"status": "success", "data": answers[path]}).encode())

    with fake_server(handle) as url, PromClient(url) as c:
        assert c.query("up")[0].value == 2.0
        assert c.label_values("config", "up") == ["tp8", "pp8"]


def test_async_client_has_the_same_guarantees() -> None:
    async def run(url: str) -> str:
        async with AsyncPromClient(url, timeout_s=0.5) as c:
            try:
                await c.query("up")
            except PrometheusError as e:
                return str(e)
        return "no error"

    assert "not reachable" in asyncio.run(run(f"http://127.0.0.1:{free_port()}"))
    with fake_server(_silent) as url:
        t0 = time.monotonic()
        assert "did not answer within 0.5 s" in asyncio.run(run(url))
        assert time.monotonic() - t0 < 2
