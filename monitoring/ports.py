"""Local TCP ports for the services a run starts (Prometheus, metrics exporters, Ray, Serve)."""

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_or_free(port: int) -> int:
    """`port` when it is set and free, else a free one."""
    if port:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass
    return free_port()
