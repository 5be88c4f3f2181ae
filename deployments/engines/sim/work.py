"""What one engine iteration does, and what it costs: the seam between the scheduler and the
performance model (entities / events / execution-time predictor kept apart, as in Vidur)."""

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BatchShape:
    """Aggregate shape of one iteration's batch (one micro-batch when PP > 1).

    The scheduler keeps these sums up to date so that costing a step is O(1) in the batch size.
    """

    prefill_tokens: int = 0          # new tokens of all prefill chunks in this iteration
    prefill_seqs: int = 0            # sequences with a prefill chunk in this iteration
    prefill_attn_pairs: float = 0.0  # Σ over chunks of new·(context + (new+1)/2): causal query-key pairs
    decode_seqs: int = 0             # sequences decoding one token each
    decode_context: int = 0          # Σ of their context lengths (KV tokens each one reads)

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    @property
    def num_seqs(self) -> int:
        return self.prefill_seqs + self.decode_seqs


@dataclass(frozen=True, slots=True)
class StepCost:
    """Time of one iteration.

    latency_s: from the step's start until its tokens exist (all PP stages, transfers, host overhead).
    stage_s: time the slowest pipeline stage is busy with it; with PP micro-batches in flight a new
    micro-batch can start every stage_s (equals latency_s when PP = 1).
    terms: seconds per cost term along the latency path (gemm, attention, allreduce, p2p, lm_head,
    elementwise, host ...), so a user can see why a configuration is slow.
    """

    latency_s: float
    stage_s: float
    terms: dict[str, float] = field(default_factory=dict)


class CostModel(Protocol):
    """Predicts the time of one iteration for a fixed model × GPU × dtype × (TP, PP)."""

    def step(self, batch: BatchShape) -> StepCost: ...
