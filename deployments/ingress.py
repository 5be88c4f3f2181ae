"""The OpenAI-compatible, SLA-aware ingress: routes each request to a configuration's LLMServer.

`model` naming a live configuration goes there; `auto` (or the scenario's base model name) goes where the
routing weights of the request's SLA class (header `x-sla-class`) send it; a class routed nowhere (a
transition replacing its pool) waits in the bounded hold queue (hold.py) until a routing serves it.
The live configurations come with the routing from the RoutingStore: each has an application of its own
(app_args.config_app_name), whose handle this replica makes when a routing version first lists it. Responses carry
`x-parallax-config` (who served) and echo `x-sla-class`; the client's `x-request-id` (Serve's proxy makes
one up when absent, and echoes it) names the request in the replicas' logs and the response's `id`
(loadgen/wire.py).
"""

import asyncio
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import openai_api as api
from deployments.app_args import AppArgs, config_app_name, server_deployment_name
from deployments.hold import HoldQueue
from deployments.routing import RoutingError, WeightedRoundRobin, Weights, check_weights, routing_error_message
from deployments.routing_store import Routing, UpdateResult
from loadgen.wire import (
    CLASS_HEADER,
    CONFIG_HEADER,
    INGRESS_HEADER,
    MAX_REQUEST_ID,
    REPLICA_HEADER,
    REQUEST_ID_HEADER,
    Job,
    Kind,
    valid_request_id,
)

logger = logging.getLogger("ray.serve")
RETRY_S = 0.5  # wait before polling the routing store again after a failed call
BURST_RETRY_S = 0.05  # how soon a request released from the hold tries again when the configuration's queue is full
HANDLE_READY_S = 10.0  # the longest a new configuration's handle may take to learn its replicas

fastapi_app = FastAPI(title="Parallax ingress", docs_url=None, redoc_url=None, openapi_url=None)


@fastapi_app.exception_handler(api.OpenAIError)
async def _openai_error(_: Request, e: api.OpenAIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
    kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
    return JSONResponse(api.OpenAIError(e.status_code, str(e.detail), kind).body(), status_code=e.status_code)


@fastapi_app.exception_handler(Exception)
async def _unexpected(_: Request, e: Exception) -> JSONResponse:
    logger.exception("request failed")
    return JSONResponse(api.OpenAIError(500, f"internal error: {type(e).__name__}", "server_error").body(),
                        status_code=500)


def _error(e: api.OpenAIError, headers: dict[str, str]) -> JSONResponse:
    """An error response that still names the configuration and class (the client's record keeps them)."""
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


async def _forward(gen: DeploymentResponseGenerator) -> AsyncIterator[str]:
    """Relay the server's SSE events; a client that goes away cancels the request in the replica."""
    try:
        async for event in gen:
            yield event
    finally:
        gen.cancel()


@serve.ingress(fastapi_app)
class Ingress:
    """One of `server.ingress_replicas` replicas. Each routes with its own copy of the routing, which it
    follows from the RoutingStore (routing_store.py); a change, from `PUT /v1/routing` on any replica
    (the controller's) or `set_routing` through a handle, goes through the store and reaches every replica."""

    async def __init__(self, args: dict[str, Any], store: DeploymentHandle):  # type: ignore[misc]
        resolved = AppArgs.model_validate(args).resolve()
        s = resolved.scenario
        self.base_model = s.model
        self.classes = [c.name for c in s.classes]
        self.default_class = s.default_class
        self.engine = s.engine.kind
        self.created = int(time.time())
        self.hold = HoldQueue(s.server.hold_queue_size, s.server.hold_max_wait_s)
        self._bursting: dict[str, int] = {}   # per configuration: released requests still waiting for queue room
        self.handles: dict[str, DeploymentHandle] = {}
        self.streams: dict[str, DeploymentHandle] = {}
        self.store = store
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.routing: Routing = await store.watch.remote(self.replica, None, 0.0)
        self._follow_set(self.routing)
        self.router = WeightedRoundRobin(self.routing.weights)
        self._follower = asyncio.get_running_loop().create_task(self._follow())
        key_env = s.server.api_key_env
        self._key = os.environ.get(key_env, "").encode() if key_env else b""
        if key_env and not self._key:
            logger.warning("server.api_key_env names %s but it is not set: the API is open", key_env)

    # --- the routing, shared through the store ------------------------------------------------------
    @property
    def configs(self) -> dict[str, Any]:
        """The live configurations (name → ParallelConfig), as the routing in force lists them."""
        return self.routing.configs

    def _follow_set(self, routing: Routing) -> list[str]:
        """Handles for the configurations `routing` lists, made before its weights apply; none for the others.
        Returns the names of the new ones. Serve's gRPC transport to the replicas (not Ray object refs): half the
        ingress's and the replica's CPU per request, and a third of the added TTFT, in bench/path_cost.py."""
        new = sorted(routing.configs.keys() - self.handles.keys())
        for name in new:
            h = serve.get_deployment_handle(server_deployment_name(name), app_name=config_app_name(name))
            self.handles[name] = h.options(_by_reference=False)   # creates the handle's router (shared)
            self.streams[name] = h.options(stream=True, _by_reference=False)
        for name in self.handles.keys() - routing.configs.keys():
            del self.handles[name], self.streams[name]
        return new

    async def _handles_ready(self, names: list[str]) -> None:
        """Wait (at most HANDLE_READY_S) until the handles of `names` know their running replicas: a request sent
        before that waits in the handle's queue, and a burst (the hold released at once) would overflow it."""
        deadline = time.monotonic() + HANDLE_READY_S
        while time.monotonic() < deadline and not all(self.handles[n].running_replicas_populated()
                                                      for n in names if n in self.handles):
            await asyncio.sleep(0.02)

    def _apply(self, routing: Routing) -> None:
        """Take a newer version: the set first (handles), then the weights (only the classes whose rows changed
        restart their round-robin); held requests look again."""
        if routing.version <= self.routing.version:
            return
        self._follow_set(routing)  # nothing new where _follow readied the handles first
        changed = {c: row for c, row in routing.weights.items() if self.routing.weights.get(c) != row}
        self.router.update(changed)
        self.routing = routing
        self.hold.release()

    async def _follow(self) -> None:
        """Long-poll the store for new versions (each poll also acknowledges the version applied)."""
        while True:
            try:
                routing = await self.store.watch.remote(self.replica, self.routing)
                if routing.version > self.routing.version:
                    await self._handles_ready(self._follow_set(routing))
                self._apply(routing)
            except asyncio.CancelledError:
                raise
            except Exception:  # the store restarts (Serve brings it back): keep the routing, retry
                logger.warning("routing store unreachable; keeping routing version %d", self.routing.version,
                               exc_info=True)
                await asyncio.sleep(RETRY_S)

    # --- the /v1/routing endpoints (the controller's PUT), or a Serve handle inside the cluster ------
    def get_routing(self) -> dict[str, Any]:
        return {"version": self.routing.version, "default_class": self.default_class,
                "weights": self.router.weights, "replica": self.replica}

    async def set_routing(self, weights: Weights) -> dict[str, Any]:
        """Replace the weights of the classes given (raises RoutingError naming what is wrong); returns once
        every ingress replica honours them (at most routing_store.ACK_S)."""
        checked = check_weights(weights, self.classes, None)  # the store checks the names against the live set
        try:
            result: UpdateResult = await self.store.update.remote(checked, self.routing)
        except RoutingError:
            raise
        except Exception as e:
            raise api.OpenAIError(503, f"the routing store is unavailable ({type(e).__name__}); retry",
                                  "server_error", code="routing_unavailable") from None
        self._apply(result.routing)
        return self.get_routing() | {"replicas": {"applied": result.applied, "live": result.replicas}}

    async def check_health(self) -> None:
        """Serve's health check: the routing follower must still be running."""
        if self._follower.done():
            raise RuntimeError("the routing follower stopped")

    # --- HTTP --------------------------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        if not self._key:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].encode() if given.lower().startswith("bearer ") else b""
        if not hmac.compare_digest(token, self._key):
            raise api.OpenAIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  "authentication_error", code="invalid_api_key")

    @fastapi_app.get("/health")
    def health(self) -> dict[str, Any]:
        return {"status": "ok", "configurations": list(self.configs)}

    @fastapi_app.get("/v1/models")
    def models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        data = [{"id": name, "object": "model", "created": self.created, "owned_by": "parallax",
                 "root": self.base_model,
                 "parallax": {"tp": c.tp, "pp": c.pp, "replicas": c.replicas, "engine": self.engine}}
                for name, c in self.configs.items()]
        data.append({"id": api.AUTO_MODEL, "object": "model", "created": self.created, "owned_by": "parallax",
                     "root": self.base_model, "parallax": {"routing": self.router.weights}})
        return {"object": "list", "data": data}

    @fastapi_app.get("/v1/routing")
    def routing_get(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return self.get_routing()

    @fastapi_app.put("/v1/routing")
    async def routing_put(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        body = api.parse_json(await request.body())
        try:
            return await self.set_routing(body.get("weights", body) if isinstance(body, dict) else body)
        except RoutingError as e:
            raise api.OpenAIError(400, routing_error_message(e), param="weights") from None

    @fastapi_app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._serve("completion", request)

    @fastapi_app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve("chat", request)

    async def _route(self, model: str, sla_class: str) -> tuple[str, float]:
        """The configuration that serves the request, and the seconds it was held: a held class waits for one
        (HoldFull / HoldExpired)."""
        if model in self.configs:
            return model, 0.0
        if model in (api.AUTO_MODEL, self.base_model):
            held_s = await self.hold.wait(sla_class, lambda: not self.router.held(sla_class))
            return self.router.choose(sla_class), held_s
        raise api.OpenAIError(404, f"model {model!r} does not exist; use one of "
                              f"{', '.join([*self.configs, api.AUTO_MODEL])}", param="model",
                              code="model_not_found")

    async def _serve(self, kind: Kind, request: Request) -> Response:
        arrival = time.time()
        self._authorize(request)
        sla_class = request.headers.get(CLASS_HEADER) or self.default_class
        if sla_class not in self.classes:
            raise api.OpenAIError(400, f"unknown SLA class {sla_class!r} in header {CLASS_HEADER}; use one of "
                                  f"{', '.join(self.classes)}", param=CLASS_HEADER)
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        if not valid_request_id(request_id):
            raise api.OpenAIError(400, f"header {REQUEST_ID_HEADER}: give at most {MAX_REQUEST_ID} printable ASCII "
                                  "characters without spaces, or leave it out", param=REQUEST_ID_HEADER)
        body = api.parse_request(kind, await request.body())
        config, held_s = await self._route(body.model, sla_class)
        handles, streams = self.handles[config], self.streams[config]  # a removed configuration's stay usable
        job = Job(request_id=request_id, kind=kind, model=config, prompt=body.prompt_text(),
                  max_tokens=body.output_limit, min_tokens=body.min_tokens, temperature=body.temperature,
                  ignore_eos=body.ignore_eos, sla_class=sla_class, include_usage=body.include_usage,
                  arrival_wall=arrival)
        headers = {CONFIG_HEADER: config, CLASS_HEADER: sla_class, INGRESS_HEADER: self.replica}
        # a request the hold released arrives with the whole queue at once, a burst that may overflow the
        # configuration's queue at this replica (max_queued_requests): it keeps its place in the hold's time, and
        # so does a request that arrives while released ones still wait for room (it queues behind the burst,
        # as it would have behind the hold); outside a burst a full queue is a 503 at once
        burst = held_s > 0 or self._bursting.get(config, 0) > 0
        retry_until = time.monotonic() + self.hold.max_wait_s - held_s if burst else 0.0
        counted = False
        try:
            while True:
                try:
                    if not body.stream:
                        out = await handles.complete.remote(job)
                        headers[REPLICA_HEADER] = out["replica"]
                        return JSONResponse(out["body"], status_code=out["status"], headers=headers)
                    gen = streams.generate.remote(job)
                    assert isinstance(gen, DeploymentResponseGenerator)
                    first = await gen.__anext__()
                    break
                except BackPressureError:
                    if time.monotonic() >= retry_until:
                        raise
                    if held_s > 0 and not counted:
                        self._bursting[config] = self._bursting.get(config, 0) + 1
                        counted = True
                    await asyncio.sleep(BURST_RETRY_S)
        except BackPressureError:
            return _error(api.OpenAIError(503, f"configuration {config} is overloaded (its queue is full); retry "
                                          "later", "server_overloaded", code="overloaded"), headers)
        except Exception as e:  # the replica died under the request (a failed GPU, a killed replica)
            logger.warning("request %s: a replica of %s failed: %s", request_id, config, type(e).__name__)
            return _error(api.OpenAIError(502, f"a replica of configuration {config} failed ({type(e).__name__}); "
                                          "retry", "server_error", code="replica_failed"), headers)
        finally:
            if counted:
                self._bursting[config] -= 1
        headers[REPLICA_HEADER] = first["replica"]
        if first["status"] != 200:
            return JSONResponse(first["body"], status_code=first["status"], headers=headers)
        return StreamingResponse(_forward(gen), media_type="text/event-stream", headers=headers)
