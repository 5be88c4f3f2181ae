"""What a local run exposes: the processes of a session, the TCP sockets they listen on, and the one kind
of Ray socket that may listen on every interface.

A local Ray starts with a loopback node IP (deployments.cluster), so its servers bind 127.0.0.1, except
what Ray hard-codes to all interfaces: listed in ALL_INTERFACES_ALLOWED with why and what protects it.
"""

import contextlib
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath

import psutil


@dataclass(frozen=True)
class AllowedOnAllInterfaces:
    """A socket Ray binds to every interface with no setting to change it, and what guards it."""

    process_prefix: str  # the listening process's command line starts with this
    what: str
    why: str
    guard: str


ALL_INTERFACES_ALLOWED = (
    AllowedOnAllInterfaces(
        process_prefix="ray::ServeReplica:",
        what="Serve replicas' gRPC (calls between deployments)",
        why="Ray Serve 2.60 binds it to [::]:0 whatever the node IP (ray/serve/_private/replica.py)",
        guard="Ray token (UNAUTHENTICATED without it)"),
)


@dataclass(frozen=True)
class ListeningSocket:
    pid: int
    process: str  # command line; Ray's workers name themselves ray::<actor>
    host: str     # as bound; an IPv4-mapped IPv6 address is given as IPv4
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def name(self) -> str:
        """ray::<actor> for Ray's workers, else the program, script or module (raylet, monitor.py …)."""
        words = self.process.split() or ["?"]
        if PurePath(words[0]).name.startswith("python") and len(words) > 1:
            if "-m" in words[:-1]:
                return words[words.index("-m") + 1]
            words = [w for w in words[1:] if not w.startswith("-")] or words
        return PurePath(words[0]).name if "/" in words[0] else words[0]

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def allowance(self) -> AllowedOnAllInterfaces | None:
        """The allow-list entry for this socket's process (None: it must listen on loopback)."""
        return next((a for a in ALL_INTERFACES_ALLOWED if self.process.startswith(a.process_prefix)), None)


def is_loopback(host: str) -> bool:
    """`host` (an IP, bracketed or not, or a name) is this machine's loopback."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    return str(mapped or addr)


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid`: a detached holder leads its own session, and Ray's workers, each
    leading a process group of its own, stay in it."""
    pids = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid:
                pids.append(pid)
    return pids


def listening_sockets(pids: Iterable[int]) -> list[ListeningSocket]:
    """The TCP sockets these processes listen on (processes that exit meanwhile are skipped)."""
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            name = " ".join(proc.cmdline()) or proc.name()
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        out += [ListeningSocket(pid, name, _host(c.laddr.ip), c.laddr.port)
                for c in conns if c.status == psutil.CONN_LISTEN]
    return sorted(out, key=lambda s: (s.process, s.port))


def listening_on(port: int) -> list[str] | None:
    """Addresses anything on this host listens on at `port`, whoever owns it (None: the OS would not say)."""
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:  # macOS lists other processes' sockets to root only
        return None
    return sorted({ListeningSocket(0, "", _host(c.laddr.ip), port).address
                   for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port})
