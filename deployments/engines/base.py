"""The seam between the LLMServer deployment and an engine (`sim` or `vllm`)."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GenerationRequest:
    """One request as the engine sees it."""

    request_id: str
    prompt: str
    max_tokens: int
    sla_class: str
    prompt_token_ids: list[int] | None = None
    ignore_eos: bool = True
    min_tokens: int = 0                # vLLM's extra: no stop before this many tokens
    temperature: float = 0.0
    arrival_time: float = 0.0  # time.monotonic() when the ingress received it (0: now)


@dataclass(frozen=True)
class TokenChunk:
    """Tokens the engine produced since the previous chunk (several when coalesced)."""

    text: str
    num_tokens: int
    finished: bool = False
    finish_reason: str | None = None   # "length" | "stop" | "abort"
    prompt_tokens: int = 0             # set on the first chunk


@dataclass
class EngineStats:
    """Engine-internal gauges the LLMServer exports (vLLM's own names on the real engine)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    preemptions: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    """An LLM engine inside one LLMServer replica."""

    async def start(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Stream the request's output; the last chunk has finished=True."""
        ...

    async def abort(self, request_id: str) -> None: ...

    def count_prompt_tokens(self, prompt: str) -> int: ...

    def stats(self) -> EngineStats: ...

    async def check_health(self) -> None:
        """Raise when the engine can no longer serve (Serve then replaces the replica)."""
        ...

    async def shutdown(self) -> None: ...

    # --- fault experiments (the scenario's faults: the run's fault board reaches one replica's engine) ----
    def kill_rank(self, rank: int) -> str:
        """GPU `rank`'s worker dies, as a GPU failure takes it; what happened, in words."""
        ...

    def slow_rank(self, rank: int, factor: float) -> str:
        """GPU `rank` runs at `factor` of its speed from now on (1: its own again); what happened, in words.
        RuntimeError where the engine cannot do it."""
        ...
