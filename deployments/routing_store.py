"""One versioned routing for every ingress replica: a small Serve deployment that holds the weights.

Why a deployment (not a detached named actor, not Serve's user_config): it is part of the application,
so `serve deploy` configs, `parallax up` and `parallax down` create and remove it with everything else;
Serve health-checks and restarts it; the ingress reaches it by handle like any configuration. A
user_config change would need the Serve controller and a redeploy for every weight change.

Each ingress replica long-polls `watch(replica, version)`: the call returns as soon as the store holds a
newer version (or after POLL_S with the same one), so a change reaches every replica within
milliseconds, and the replica's next poll acknowledges it. `update` bumps the version and returns once
every ingress replica seen in the last STALE_S has acknowledged it (at most ACK_S), so a PUT answered
by one replica is already honoured by all of them. Requests never wait for the store: each replica
routes with its own copy. A restarted store starts at version 0; the first poll that carries a newer
version re-seeds it (an update carries the caller's version too), so the routing survives the store's
restart.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from deployments.routing import Weights

POLL_S = 5.0     # a watch with nothing new returns after this long (and the replica polls again)
STALE_S = 3 * POLL_S  # a replica that has not polled for this long is gone (scaled down, or dead)
ACK_S = 1.0      # the longest an update waits for every live replica to apply it


@dataclass(frozen=True)
class Routing:
    """Routing weights and their version (0: the starting weights, before any update)."""

    version: int
    weights: Weights

    def merged(self, update: Weights) -> "Routing":
        """The next version: rows of the classes in `update` replaced, the others kept."""
        return Routing(self.version + 1, {**self.weights, **update})


@dataclass(frozen=True)
class UpdateResult:
    routing: Routing
    applied: int   # live ingress replicas that acknowledged the new version
    replicas: int  # live ingress replicas


@dataclass
class _Replica:
    version: int
    seen: float = field(default_factory=time.monotonic)


class RoutingStore:
    """The versioned weights; one replica (num_cpus 0), called only by the ingress replicas."""

    def __init__(self, weights: Weights):
        self._routing = Routing(0, weights)
        self._changed = asyncio.Event()
        self._polled = asyncio.Event()
        self._replicas: dict[str, _Replica] = {}

    def _set(self, routing: Routing) -> None:
        self._routing = routing
        self._changed.set()
        self._changed = asyncio.Event()

    def _live(self) -> dict[str, _Replica]:
        now = time.monotonic()
        self._replicas = {k: r for k, r in self._replicas.items() if now - r.seen < STALE_S}
        return self._replicas

    async def watch(self, replica: str, known: Routing | None = None, timeout_s: float = POLL_S) -> Routing:
        """The routing, once its version is newer than `known` (or after `timeout_s`); polling acknowledges
        `known`. A `known` newer than the store's own re-seeds a restarted store."""
        version = known.version if known is not None else -1
        self._replicas[replica] = _Replica(version)
        self._polled.set()
        if known is not None and known.version > self._routing.version:
            self._set(known)
        if self._routing.version <= version:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout_s)
        return self._routing

    async def update(self, weights: Weights, known: Routing | None = None) -> UpdateResult:
        """Apply checked weights (a partial update) on top of the newest of the store's routing and the
        caller's `known` one, and wait until the live ingress replicas honour them."""
        base = known if known is not None and known.version > self._routing.version else self._routing
        routing = base.merged(weights)
        self._set(routing)
        deadline = time.monotonic() + ACK_S
        while True:
            self._polled.clear()
            live = self._live()
            applied = sum(r.version >= routing.version for r in live.values())
            left = deadline - time.monotonic()
            if applied == len(live) or left <= 0:
                return UpdateResult(routing, applied, len(live))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._polled.wait(), left)

