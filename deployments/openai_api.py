"""The OpenAI wire format the ingress speaks: request schemas, error bodies and response/SSE builders.

Pure functions and pydantic models only; the ingress and the LLMServer do the I/O. Parallax's own part of
the contract (headers, usage extras, ids, the job a replica gets) is loadgen/wire.py, which clients share.
"""

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loadgen import wire

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; used for chat too
AUTO_MODEL = "auto"
MAX_STOP_SEQUENCES = 4   # OpenAI's limit on `stop`


class OpenAIError(Exception):
    """An error answered to the client in OpenAI's format."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    """Fields both endpoints share, with vLLM's extras `ignore_eos` and `min_tokens`."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    min_tokens: int = Field(default=0, ge=0)
    temperature: float = Field(default=0.0, ge=0, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="one choice per request")
    ignore_eos: bool = True
    user: str | None = None
    stop: str | list[str] | None = Field(default=None, description="validated as OpenAI does; the engines stop "
                                         "on max_tokens only")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_sequences(cls, v: object) -> object:
        strings = isinstance(v, list) and len(v) <= MAX_STOP_SEQUENCES and all(isinstance(x, str) for x in v)
        if not (v is None or isinstance(v, str) or strings):
            raise ValueError(f"give a string or a list of at most {MAX_STOP_SEQUENCES} strings")
        return v

    @model_validator(mode="after")
    def _min_le_max(self) -> "_Common":
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens must be ≤ max_tokens")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def output_limit(self) -> int:
        return self.max_tokens if self.max_tokens is not None else DEFAULT_MAX_TOKENS


class CompletionRequest(_Common):
    prompt: str | list[str]

    @model_validator(mode="after")
    def _one_prompt(self) -> "CompletionRequest":
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("give one prompt per request (a string or a list of one string)")
        return self

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def output_limit(self) -> int:
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return limit if limit is not None else DEFAULT_MAX_TOKENS

    def prompt_text(self) -> str:
        """A generic chat rendering: one `role: text` line per message, then the assistant turn."""
        lines = []
        for m in self.messages:
            if isinstance(m.content, list):
                text = " ".join(str(part.get("text", "")) for part in m.content if part.get("type") == "text")
            else:
                text = m.content or ""
            lines.append(f"{m.role}: {text}")
        lines.append("assistant:")
        return "\n".join(lines)


def parse_json(raw: bytes) -> Any:
    """A request body as JSON; not JSON (or nested too deeply to parse) is a 400."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OpenAIError(400, f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise OpenAIError(400, "request body nests arrays or objects too deeply to parse; flatten it") from None


def parse_request(kind: wire.Kind, raw: bytes) -> CompletionRequest | ChatCompletionRequest:
    """Parse a request body; every problem becomes a 400 naming the field."""
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise OpenAIError(400, "request body must be a JSON object")
    schema = CompletionRequest if kind == "completion" else ChatCompletionRequest
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        return_msg = f"{param}: {msg}" if param else msg
        raise OpenAIError(400, return_msg, param=param) from None


def context_error(prompt_tokens: int, max_tokens: int, context: int) -> OpenAIError | None:
    """vLLM's rule: prompt plus requested output must fit the model's context."""
    if prompt_tokens >= context:
        return OpenAIError(400, f"the prompt has {prompt_tokens} tokens but the model's context is {context}; "
                           "shorten the prompt", param="prompt", code="context_length_exceeded")
    if prompt_tokens + max_tokens > context:
        return OpenAIError(400, f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the "
                           f"model's context of {context}; lower max_tokens to at most {context - prompt_tokens}",
                           param="max_tokens", code="context_length_exceeded")
    return None


def usage(prompt_tokens: int, completion_tokens: int, stream_interval_ms: float,
          ttft_s: float | None = None, tpot_s: float | None = None) -> dict[str, Any]:
    """OpenAI usage plus Parallax's extras: the SSE coalescing interval and the server's own TTFT / TPOT
    (engine clock; from the ingress's receipt to the token leaving the engine), so that a client can
    tell how much of its latency the path to it added."""
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens,
                           wire.STREAM_INTERVAL_MS: stream_interval_ms}
    for key, v in ((wire.SERVER_TTFT_MS, ttft_s), (wire.SERVER_TPOT_MS, tpot_s)):
        if v is not None:
            out[key] = round(v * 1e3, 3)
    return out


def response_body(kind: wire.Kind, request_id: str, model: str, text: str,
                  finish_reason: str | None, use: dict[str, Any]) -> dict[str, Any]:
    """A whole (non-streamed) response."""
    if kind == "completion":
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
        obj = "chat.completion"
    return {"id": request_id, "object": obj, "created": int(time.time()), "model": model,
            "choices": [choice], "usage": use}


def stream_event(kind: wire.Kind, request_id: str, model: str, created: int, text: str,
                 finish_reason: str | None, first: bool = False) -> str:
    """One SSE event carrying `text` (possibly several coalesced tokens)."""
    if kind == "completion":
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    else:
        delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    return sse({"id": request_id, "object": obj, "created": created, "model": model, "choices": [choice]})


def usage_event(kind: wire.Kind, request_id: str, model: str, created: int,
                use: dict[str, Any]) -> str:
    """The final event of `stream_options.include_usage`: no choices, only usage."""
    obj = "text_completion" if kind == "completion" else "chat.completion.chunk"
    return sse({"id": request_id, "object": obj, "created": created, "model": model, "choices": [],
                "usage": use})


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"
