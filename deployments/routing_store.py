"""One versioned routing for every ingress replica: a small Serve deployment that holds the serving set
(which configurations are live, with their specs) and the weights, versioned together.

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

The serving set: `put_config` adds (or updates) a live configuration with weight 0 in every class, `remove`
takes one out of the set and of every row, refused while any class still routes to it; `update` refuses a
weight > 0 on a configuration that is not live. An ingress replica creates a configuration's handle when a
version first lists it and drops it when a version no longer does, so the routing that first sends a class
to a configuration arrives with (or after) its handle, and a removed configuration is never routed to.
A row with no weight > 0 holds its class at the ingress (`update(..., allow_hold=True)`, the fleet's).
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from deployments.routing import RoutingError, Weights, check_weights, held_classes
from schema.deployment import ParallelConfig

POLL_S = 5.0     # a watch with nothing new returns after this long (and the replica polls again)
STALE_S = 3 * POLL_S  # a replica that has not polled for this long is gone (scaled down, or dead)
ACK_S = 1.0      # the longest an update waits for every live replica to apply it


@dataclass(frozen=True)
class Routing:
    """The live configurations, the routing weights, and their version (0: the start, before any change)."""

    version: int
    weights: Weights
    configs: dict[str, ParallelConfig] = field(default_factory=dict)

    def merged(self, update: Weights, allow_hold: bool = False) -> "Routing":
        """The next version: rows of the classes in `update` replaced (checked: known classes, weights > 0 only
        on live configurations; zero weights on configurations no longer live dropped), the others kept."""
        checked = check_weights(update, list(self.weights), None, allow_hold)
        dead = sorted({n for row in checked.values() for n, w in row.items() if w > 0 and n not in self.configs})
        if dead:
            raise RoutingError(f"configuration {', '.join(dead)} is not live; deploy it first (live: "
                               f"{', '.join(self.configs) or 'none'})")
        rows = {c: {n: w for n, w in row.items() if n in self.configs} for c, row in checked.items()}
        return Routing(self.version + 1, {**self.weights, **rows}, self.configs)

    def with_config(self, config: ParallelConfig) -> "Routing":
        """The next version with `config` live (added with weight 0, or its spec replaced: a new replica count)."""
        return Routing(self.version + 1, self.weights, {**self.configs, config.name: config})

    def without_config(self, name: str) -> "Routing":
        """The next version without `name`; RoutingError while a class still routes to it."""
        routed = sorted(c for c, row in self.weights.items() if row.get(name, 0) > 0)
        if routed:
            raise RoutingError(f"configuration {name} still serves {', '.join(routed)}; route those classes "
                               "elsewhere (and drain it) before removing it")
        rows = {c: {n: w for n, w in row.items() if n != name} for c, row in self.weights.items()}
        return Routing(self.version + 1, rows, {n: c for n, c in self.configs.items() if n != name})

    def held(self) -> list[str]:
        """The classes whose row routes nowhere."""
        return held_classes(self.weights)


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

    def __init__(self, weights: Weights, configs: list[dict[str, object]]):
        live = [ParallelConfig.model_validate(c) for c in configs]
        self._routing = Routing(0, weights, {c.name: c for c in live})
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

    def routing(self) -> Routing:
        return self._routing

    async def update(self, weights: Weights, known: Routing | None = None, allow_hold: bool = False) -> UpdateResult:
        """Apply weights (a partial update; RoutingError naming what is wrong) on top of the newest of the store's
        routing and the caller's `known` one, and wait until the live ingress replicas honour them."""
        base = known if known is not None and known.version > self._routing.version else self._routing
        return await self._publish(base.merged(weights, allow_hold))

    async def put_config(self, config: ParallelConfig) -> UpdateResult:
        """Make `config` live (weight 0 everywhere; a live one keeps its weights) on every ingress replica."""
        return await self._publish(self._routing.with_config(config))

    async def remove(self, name: str) -> UpdateResult:
        """Take `name` out of the serving set on every ingress replica (RoutingError while it is routed)."""
        return await self._publish(self._routing.without_config(name))

    async def _publish(self, routing: Routing) -> UpdateResult:
        """Make `routing` the current version and wait (at most ACK_S) until the live ingress replicas have
        applied it."""
        self._set(routing)
        return await self.applied(routing.version, ACK_S)

    async def applied(self, version: int, timeout_s: float) -> UpdateResult:
        """The current routing once every live ingress replica has applied `version` (or after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._polled.clear()
            live = self._live()
            applied = sum(r.version >= version for r in live.values())
            left = deadline - time.monotonic()
            if applied == len(live) or left <= 0:
                return UpdateResult(self._routing, applied, len(live))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._polled.wait(), left)

