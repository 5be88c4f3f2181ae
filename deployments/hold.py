"""The hold: where an ingress replica parks the requests of a class that no configuration serves for a while.

A transition with no free GPUs (one replica holds them all) routes a class nowhere while its pool is replaced;
its requests wait here until a routing gives the class a configuration again. The queue is bounded twice:
at most `size` requests wait at once (one more is refused at once), and none waits longer than `max_wait_s`
(then it is refused); a refusal is an OpenAI-style 503 the client records, never a silent loss. The time
spent here is part of the request's TTFT: the clock started when the ingress received it.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable

from deployments import openai_api as api


class HoldFull(api.OpenAIError):
    def __init__(self, sla_class: str, size: int):
        super().__init__(503, f"class {sla_class} is held while its pool is replaced and the hold queue is full "
                         f"({size} requests); retry later", "server_overloaded", code="hold_full")


class HoldExpired(api.OpenAIError):
    def __init__(self, sla_class: str, max_wait_s: float):
        super().__init__(503, f"class {sla_class} was held for {max_wait_s:g} s with no configuration to serve "
                         "it; retry later", "server_overloaded", code="hold_expired")


class HoldQueue:
    """The held requests of one ingress replica (all classes together), bounded in number and in wait."""

    def __init__(self, size: int, max_wait_s: float):
        self.size = size
        self.max_wait_s = max_wait_s
        self.waiting = 0
        self._released = asyncio.Event()

    def release(self) -> None:
        """A new routing arrived: every waiter looks again whether its class is served."""
        self._released.set()
        self._released = asyncio.Event()

    async def wait(self, sla_class: str, served: Callable[[], bool]) -> float:
        """Return once `served()` (at once when it already is): the seconds waited. Raises HoldFull when
        `size` requests already wait, HoldExpired after `max_wait_s`."""
        if served():
            return 0.0
        if self.waiting >= self.size:
            raise HoldFull(sla_class, self.size)
        self.waiting += 1
        start = time.monotonic()
        try:
            while not served():
                left = start + self.max_wait_s - time.monotonic()
                if left <= 0:
                    raise HoldExpired(sla_class, self.max_wait_s)
                released = self._released
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), left)
            return time.monotonic() - start
        finally:
            self.waiting -= 1
