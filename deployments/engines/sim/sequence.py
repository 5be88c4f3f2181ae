"""One request inside the simulated engine: its lengths, progress, KV blocks and token times."""

from enum import IntEnum


class Status(IntEnum):
    PENDING = 0    # submitted, its arrival time not reached yet (a handoff: or no KV blocks reserved yet)
    WAITING = 1    # arrived, queued (or preempted) without KV blocks
    RECEIVING = 2  # a decode replica's: holds KV blocks its prompt's KV cache is being copied into
    RUNNING = 3    # holds KV blocks; scheduled step by step
    FINISHED = 4
    ABORTED = 5


class Sequence:
    """Progress of one request; all times are simulated seconds.

    `num_computed` counts tokens whose KV is computed (or scheduled in the in-flight micro-batch).
    A step that brings it to `num_tokens` (prompt + generated) samples the next token. Preemption
    frees the blocks and resets `num_computed` to 0: the prompt and the tokens generated so far are
    recomputed as one longer prefill, as vLLM's recompute preemption does.
    """

    __slots__ = (
        "arrival", "finish_time", "first_token_time", "in_flight", "max_tokens", "num_blocks",
        "num_computed", "num_output", "preemptions", "prompt_len", "request_id", "sched_step",
        "status", "token_times",
    )

    def __init__(self, request_id: str, prompt_len: int, max_tokens: int, arrival: float = 0.0):
        if prompt_len < 1:
            raise ValueError(f"request {request_id}: a prompt needs at least one token")
        if max_tokens < 1:
            raise ValueError(f"request {request_id}: max_tokens must be at least 1")
        self.request_id = request_id
        self.prompt_len = prompt_len
        self.max_tokens = max_tokens
        self.arrival = arrival
        self.status = Status.PENDING
        self.num_computed = 0
        self.num_output = 0
        self.num_blocks = 0
        self.in_flight = 0        # in-flight iterations (micro-batches) carrying it
        self.sched_step = -1
        self.preemptions = 0
        self.first_token_time: float | None = None
        self.finish_time: float | None = None
        self.token_times: list[float] = []

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens: what a full recompute has to prefill."""
        return self.prompt_len + self.num_output

    @property
    def is_decoding(self) -> bool:
        """True when only the last sampled token lacks KV: the next step is a one-token decode."""
        return self.num_output > 0 and self.num_computed == self.prompt_len + self.num_output - 1

    @property
    def done(self) -> bool:
        return self.status >= Status.FINISHED

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id!r}, prompt={self.prompt_len}, out={self.num_output}/"
                f"{self.max_tokens}, computed={self.num_computed}, {self.status.name})")
