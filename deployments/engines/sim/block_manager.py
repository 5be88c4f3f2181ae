"""Paged KV cache accounting: fixed-size blocks, a free count, no prefix sharing.

Only the number of blocks matters to the timing model, so blocks are counted, not named.
"""

from deployments.engines.sim.sequence import Sequence


class BlockManager:
    """`num_blocks` KV blocks of `block_size` tokens each, shared by the sequences of one replica."""

    __slots__ = ("block_size", "free", "num_blocks")

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one KV block of at least one token (got {num_blocks} × {block_size})")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free = num_blocks

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def blocks_needed(self, seq: Sequence, new_tokens: int) -> int:
        """Extra blocks `seq` needs to hold `new_tokens` more KV entries."""
        total = -(-(seq.num_computed + new_tokens) // self.block_size)
        return max(0, total - seq.num_blocks)

    def allocate(self, seq: Sequence, blocks: int) -> None:
        if blocks > self.free:
            raise RuntimeError(f"allocating {blocks} KV blocks with {self.free} free")
        self.free -= blocks
        seq.num_blocks += blocks

    def release(self, seq: Sequence) -> None:
        self.free += seq.num_blocks
        seq.num_blocks = 0

    @property
    def usage(self) -> float:
        """Fraction of blocks in use, 0..1 (vLLM's kv_cache_usage_perc)."""
        return 1.0 - self.free / self.num_blocks
