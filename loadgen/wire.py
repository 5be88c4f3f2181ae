"""The Parallax wire contract: what a client sends the ingress and reads back, and the request the ingress
hands a configuration's replica.

Pure (standard library only), so both sides import it without importing each other: the load generator
(the client, which must work against any OpenAI-compatible server and never imports the Serve app) and
deployments (ingress, LLMServer, OpenAI format). It lives in loadgen because deployments already builds on
loadgen's schemas while loadgen may not import deployments; with the scenario schema it can move to the
package at the bottom of the import graph.

Request ids: the client's `x-request-id` (printable ASCII, no spaces, at most MAX_REQUEST_ID characters;
the ingress makes one up when it is absent) is kept end to end. The response's `id` is it with OpenAI's
prefix, as vLLM does (`cmpl-<x-request-id>` for completions, `chatcmpl-<x-request-id>` for chat), the
response echoes the header, and the server's log lines name it, so a client's records join to server logs.
"""

import re
from dataclasses import dataclass
from typing import Literal

CLASS_HEADER = "x-sla-class"            # request: the SLA class (else the scenario's default); echoed
CONFIG_HEADER = "x-parallax-config"     # response: the configuration that served the request
REQUEST_ID_HEADER = "x-request-id"      # request: the client's id, kept end to end; echoed
INGRESS_HEADER = "x-parallax-ingress"   # response: the ingress replica that answered
REPLICA_HEADER = "x-parallax-replica"   # response: the configuration's replica that served it (a replay follows it)

# Parallax's extras in a response's usage: the server's own timing (engine clock, ms) and SSE coalescing.
SERVER_TTFT_MS = "parallax_server_ttft_ms"
SERVER_TPOT_MS = "parallax_server_tpot_ms"
STREAM_INTERVAL_MS = "parallax_stream_interval_ms"

Kind = Literal["completion", "chat"]
ID_PREFIX: dict[Kind, str] = {"completion": "cmpl", "chat": "chatcmpl"}
MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID}}}")   # printable ASCII, no spaces or control characters


def valid_request_id(value: str) -> bool:
    """Whether a client's `x-request-id` can be kept as given (safe in ids and log lines)."""
    return _REQUEST_ID.fullmatch(value) is not None


def response_id(kind: Kind, request_id: str) -> str:
    """The OpenAI `id` of a response to request `request_id`."""
    return f"{ID_PREFIX[kind]}-{request_id}"


@dataclass(frozen=True)
class Job:
    """A request as the ingress hands it to a configuration's replica."""

    request_id: str       # the client's x-request-id, or one the ingress made up
    kind: Kind
    model: str            # the name echoed in responses (the configuration's)
    prompt: str
    max_tokens: int
    min_tokens: int
    temperature: float
    ignore_eos: bool
    sla_class: str
    include_usage: bool
    arrival_wall: float   # time.time() when the ingress received it

    @property
    def response_id(self) -> str:
        return response_id(self.kind, self.request_id)
