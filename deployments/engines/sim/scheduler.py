"""Continuous-batching scheduler in the manner of vLLM V1: decodes first, then chunked prefills.

Each call to `schedule` builds one iteration (one micro-batch when PP > 1) from the sequences that
are not already in flight:
1. running sequences that decode one token each, oldest first;
2. running sequences part-way through a (chunked) prefill;
3. waiting sequences, first come first served, while `max_num_seqs` and the KV blocks allow,
   and only when nothing was preempted in this iteration.
All three share the token budget `max_num_batched_tokens`; a prefill takes what is left of it.
When a running sequence needs a KV block and none is free, the newest running sequence that is not
in flight is preempted (its blocks freed, its progress recomputed later), as vLLM does.
"""

from collections import deque
from dataclasses import dataclass

from deployments.engines.sim.block_manager import BlockManager
from deployments.engines.sim.sequence import Sequence, Status
from deployments.engines.sim.work import BatchShape


@dataclass(slots=True)
class Batch:
    """One scheduled iteration: decoding sequences, prefill chunks and their aggregate shape."""

    decodes: list[Sequence]
    prefills: list[Sequence]
    shape: BatchShape


class Scheduler:
    """Queues, KV blocks and the per-iteration batch decision of one engine replica."""

    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be at least 1")
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._in_flight = 0        # running sequences inside an in-flight micro-batch
        self._step = 0
        self._stale = False        # `running` holds sequences that left it (finished, preempted, aborted)

    # --- queues --------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)

    @property
    def num_running(self) -> int:
        self._compact()
        return len(self.running)

    @property
    def has_ready(self) -> bool:
        """True when some sequence could join a new iteration (waiting, or running and not in flight)."""
        return bool(self.waiting) or self.num_running > self._in_flight

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence wherever it is; an in-flight iteration still carries it but yields nothing."""
        if seq.status == Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status == Status.RUNNING:
            self._stale = True
            if seq.in_flight:
                self._in_flight -= 1
        self.blocks.release(seq)
        seq.status = Status.ABORTED

    # --- one iteration -------------------------------------------------------------------------
    def schedule(self, max_seqs: int | None = None) -> Batch | None:
        """Choose the next iteration's work and reserve its KV blocks; None when nothing can run.

        `max_seqs` caps the sequences of this one iteration (the PP pipeline splits the running set
        into micro-batches with it).
        """
        cap = max_seqs or self.max_num_seqs
        self._step += 1
        step = self._step
        budget = self.max_num_batched_tokens
        blocks = self.blocks
        block_size = blocks.block_size
        preempted = False
        decodes: list[Sequence] = []
        partial: list[Sequence] = []   # running, idle, part-way through a (re)prefill
        decode_context = 0
        running_status = Status.RUNNING
        for seq in self.running:   # the hot loop: one pass, plain attribute arithmetic
            if seq.in_flight or seq.status != running_status:
                continue
            if budget == 0 or len(decodes) == cap:
                break
            computed = seq.num_computed
            out = seq.num_output
            if out == 0 or computed != seq.prompt_len + out - 1:
                partial.append(seq)
                continue
            if computed == seq.num_blocks * block_size:  # the new token opens a block
                if blocks.free == 0:
                    preempted = True
                    if not self._make_room(seq, 1, step):
                        continue
                blocks.free -= 1
                seq.num_blocks += 1
            seq.num_computed = computed + 1
            seq.in_flight = True
            seq.sched_step = step
            decode_context += computed + 1
            decodes.append(seq)
            budget -= 1

        prefills: list[Sequence] = []
        prefill_tokens = 0
        attn_pairs = 0.0
        for seq in partial:
            if budget == 0 or len(decodes) + len(prefills) == cap:
                break
            if seq.status != running_status:   # preempted to make room above
                continue
            new = min(seq.num_tokens - seq.num_computed, budget)
            need = blocks.blocks_needed(seq, new)
            if need > blocks.free:
                preempted = True
                if not self._make_room(seq, need, step):
                    continue
            blocks.allocate(seq, need)
            attn_pairs += self._take(seq, new, step)
            prefills.append(seq)
            prefill_tokens += new
            budget -= new

        self._compact()
        while (self.waiting and budget > 0 and not preempted and len(self.running) < self.max_num_seqs
               and len(decodes) + len(prefills) < cap):
            seq = self.waiting[0]
            new = min(seq.num_tokens - seq.num_computed, budget)
            need = blocks.blocks_needed(seq, new)
            if need > blocks.free:
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            blocks.allocate(seq, need)
            attn_pairs += self._take(seq, new, step)
            prefills.append(seq)
            prefill_tokens += new
            budget -= new

        if not decodes and not prefills:
            return None
        self._in_flight += len(decodes) + len(prefills)
        shape = BatchShape(prefill_tokens=prefill_tokens, prefill_seqs=len(prefills), prefill_attn_pairs=attn_pairs,
                           decode_seqs=len(decodes), decode_context=decode_context)
        return Batch(decodes, prefills, shape)

    def complete(self, batch: Batch, t: float) -> list[Sequence]:
        """The iteration's tokens exist at time `t`: sample them; return the sequences that finished."""
        finished: list[Sequence] = []
        running_status = Status.RUNNING
        landed = 0
        for seq in batch.decodes:   # the other hot loop
            seq.in_flight = False
            if seq.status == running_status:
                landed += 1
                seq.num_output += 1
                seq.token_times.append(t)
                if seq.num_output >= seq.max_tokens:
                    self._finish(seq, t)
                    finished.append(seq)
        for seq in batch.prefills:
            seq.in_flight = False
            if seq.status == running_status:
                landed += 1
                if seq.num_computed == seq.num_tokens:
                    seq.num_output += 1
                    seq.token_times.append(t)
                    if seq.first_token_time is None:
                        seq.first_token_time = t
                    if seq.num_output >= seq.max_tokens:
                        self._finish(seq, t)
                        finished.append(seq)
        self._in_flight -= landed   # aborted ones left the count when they were aborted
        return finished

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _take(seq: Sequence, new: int, step: int) -> float:
        """Put `new` prompt tokens of `seq` into this iteration; return their causal attention pairs."""
        pairs = new * (seq.num_computed + (new + 1) / 2)
        seq.num_computed += new
        seq.in_flight = True
        seq.sched_step = step
        return pairs

    def _finish(self, seq: Sequence, t: float) -> None:
        seq.status = Status.FINISHED
        seq.finish_time = t
        self.blocks.release(seq)
        self._stale = True

    def _make_room(self, seq: Sequence, need: int, step: int) -> bool:
        """Preempt the newest idle running sequences until `need` blocks are free.

        Returns False when `seq` itself had to go (it is the newest candidate, or the only one).
        """
        while self.blocks.free < need:
            victim = None
            for cand in reversed(self.running):
                if cand.status == Status.RUNNING and not cand.in_flight and cand.sched_step != step:
                    victim = cand
                    break
            if victim is None or victim is seq:
                self._preempt(seq)
                return False
            self._preempt(victim)
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.release(seq)
        seq.num_computed = 0
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        self._stale = True

    def _compact(self) -> None:
        if self._stale:
            self.running = [s for s in self.running if s.status == Status.RUNNING]
            self._stale = False
