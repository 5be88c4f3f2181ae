"""Continuous-batching scheduler in the manner of vLLM V1: decodes first, then chunked prefills.

Each call to `schedule` builds one iteration (one micro-batch when PP > 1) from the running and
waiting sequences, in three phases that share the iteration's token budget:
1. `_decodes`: running sequences that decode one token each, oldest first;
2. `_partial_prefills`: running sequences with prompt tokens left (a chunked prefill, or a recompute
   after preemption); a prefill takes what is left of the budget;
3. `_admit`: waiting sequences, first come first served, while `max_num_seqs` and the KV blocks allow,
   and only when nothing was preempted in this iteration.
Every KV change goes through the `BlockManager`. When a running sequence needs a KV block and none is
free, the newest running sequence that is not in flight is preempted (its blocks freed, its progress
recomputed later), as vLLM does.

Disaggregation: a prefill-role scheduler (`hold_kv`) keeps a finished sequence's KV blocks until `release`
(its KV cache is being handed to a decode replica); a decode-role one `reserve`s blocks for a handed-off
prompt (counted against `max_num_seqs`, FCFS after any preempted sequence) and `add_received` makes it a
running sequence, its first token delivered, once the KV cache has arrived: its next step decodes token 2.

Micro-batches (PP = p > 1; the core keeps up to p in flight): each one takes at most 1/p of the active
sequences as decodes and 1/p of `max_num_batched_tokens` in all, so every micro-batch costs about the
same at every stage and the pipeline stays full (a micro-batch carrying a whole 8k-token prefill chunk
would hold the light ones queued behind it at every stage, and only p fit in flight). A sequence waiting
for its sampled token is in no other micro-batch; its next prompt chunk may be (the chunk reaches each
stage after the one before it), as vLLM V1 schedules prompt tokens whose predecessors are still in flight.
"""

from collections import deque
from dataclasses import dataclass, field

from deployments.engines.sim.block_manager import BlockManager
from deployments.engines.sim.sequence import Sequence, Status
from deployments.engines.sim.work import BatchShape


@dataclass(slots=True)
class Batch:
    """One scheduled iteration: decoding sequences, prefill chunks and their aggregate shape.

    `sampled`: the prefills whose chunk ends their prompt (they sample a token when the batch lands).
    """

    decodes: list[Sequence]
    prefills: list[Sequence]
    shape: BatchShape
    sampled: list[Sequence] = field(default_factory=list)


class _Draft:
    """An iteration being built: what the three phases have taken so far."""

    __slots__ = ("attn_pairs", "budget", "cap", "decode_context", "decodes", "partial", "preempted",
                 "prefill_tokens", "prefills", "sampled", "step")

    def __init__(self, step: int, cap: int, budget: int):
        self.step = step
        self.cap = cap            # decoding sequences this iteration may hold
        self.budget = budget      # tokens left
        self.decodes: list[Sequence] = []
        self.partial: list[Sequence] = []   # running, with prompt tokens left
        self.prefills: list[Sequence] = []
        self.sampled: list[Sequence] = []   # prefills whose chunk ends the prompt
        self.decode_context = 0
        self.prefill_tokens = 0
        self.attn_pairs = 0.0
        self.preempted = False


class Scheduler:
    """Queues, KV blocks and the per-iteration batch decision of one engine replica.

    `microbatches`: how many iterations the engine keeps in flight at once (PP); each takes its share of
    the sequences and of the token budget.
    """

    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int, microbatches: int = 1,
                 hold_kv: bool = False):
        if max_num_seqs < 1 or max_num_batched_tokens < 1 or microbatches < 1:
            raise ValueError("max_num_seqs, max_num_batched_tokens and microbatches must be at least 1")
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.microbatches = microbatches
        self.hold_kv = hold_kv     # prefill role: a finished sequence keeps its KV blocks until `release`
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.receiving = 0         # decode role: sequences holding blocks their KV cache is being copied into
        self._awaiting = 0         # running sequences whose sampled token is in flight
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
        """True when some sequence could join a new iteration (waiting, or running and not awaiting a token)."""
        return bool(self.waiting) or self.num_running > self._awaiting

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence wherever it is; an in-flight iteration still carries it but yields nothing."""
        if seq.status == Status.WAITING:
            self.waiting.remove(seq)
        elif seq.status == Status.RECEIVING:
            self.receiving -= 1
        elif seq.status == Status.RUNNING:
            self._stale = True
            if seq.num_computed == seq.num_tokens:
                self._awaiting -= 1
        self.blocks.release(seq)
        seq.status = Status.ABORTED

    # --- KV handoff (disaggregation) ------------------------------------------------------------
    def release(self, seq: Sequence) -> None:
        """Free the KV blocks a finished sequence kept (`hold_kv`): its decode replica has its KV cache."""
        self.blocks.release(seq)

    def reserve(self, seq: Sequence) -> bool:
        """Blocks for a handed-off prompt's KV cache, if they are free and `max_num_seqs` allows (and no
        preempted sequence waits for blocks before it); the sequence is then RECEIVING."""
        self._compact()
        if self.waiting or len(self.running) + self.receiving >= self.max_num_seqs:
            return False
        need = self.blocks.blocks_needed(seq, seq.prompt_len)
        if need > self.blocks.free:
            return False
        self.blocks.allocate(seq, need)
        seq.num_computed = seq.prompt_len
        seq.status = Status.RECEIVING
        self.receiving += 1
        return True

    def add_received(self, seq: Sequence) -> None:
        """The prompt's KV cache (and first token, `num_output` 1) has arrived: the sequence decodes on."""
        self.receiving -= 1
        seq.status = Status.RUNNING
        self.running.append(seq)

    # --- one iteration -------------------------------------------------------------------------
    def schedule(self) -> Batch | None:
        """Choose the next iteration's work and reserve its KV blocks; None when nothing can run."""
        self._step += 1
        k = self.microbatches
        cap, budget = self.max_num_seqs, self.max_num_batched_tokens
        if k > 1:
            active = min(self.max_num_seqs, self.num_running + len(self.waiting))
            cap, budget = max(1, -(-active // k)), max(1, budget // k)
        d = _Draft(self._step, cap, budget)
        self._decodes(d)
        self._partial_prefills(d)
        if not d.preempted:
            self._admit(d)
        if not d.decodes and not d.prefills:
            return None
        self._awaiting += len(d.decodes) + len(d.sampled)
        shape = BatchShape(prefill_tokens=d.prefill_tokens, prefill_seqs=len(d.prefills),
                           prefill_attn_pairs=d.attn_pairs, decode_seqs=len(d.decodes),
                           decode_context=d.decode_context)
        return Batch(d.decodes, d.prefills, shape, d.sampled)

    def _decodes(self, d: _Draft) -> None:
        """Phase 1: one token for every running sequence whose last token has landed (the hot loop: one
        pass, plain attribute arithmetic); note the ones with prompt tokens left for phase 2."""
        blocks = self.blocks
        block_size = blocks.block_size
        running_status = Status.RUNNING
        decodes, partial = d.decodes, d.partial
        cap, budget, context = d.cap, d.budget, 0
        step = d.step
        for seq in self.running:
            if seq.status != running_status:
                continue
            if budget == 0:
                break
            computed = seq.num_computed
            out = seq.num_output
            if out == 0 or computed != seq.prompt_len + out - 1:
                if computed < seq.prompt_len + out:   # else its sampled token is in flight
                    partial.append(seq)
                continue
            if len(decodes) == cap:   # this micro-batch's share of the decodes: look on for prompt chunks only
                continue
            if computed == seq.num_blocks * block_size:  # the new token opens a block
                if blocks.free == 0:
                    d.preempted = True
                    if not self._make_room(seq, 1, step):
                        continue
                blocks.allocate(seq, 1)
            seq.num_computed = computed + 1
            seq.in_flight = 1   # a decoding sequence is in no other iteration
            seq.sched_step = step
            context += computed + 1
            decodes.append(seq)
            budget -= 1
        d.budget = budget
        d.decode_context = context

    def _partial_prefills(self, d: _Draft) -> None:
        """Phase 2: the next chunk of running sequences that have prompt tokens left."""
        blocks = self.blocks
        for seq in d.partial:
            if d.budget == 0:
                break
            if seq.status != Status.RUNNING:   # preempted to make room in phase 1
                continue
            new = min(seq.num_tokens - seq.num_computed, d.budget)
            need = blocks.blocks_needed(seq, new)
            if need > blocks.free:
                d.preempted = True
                if not self._make_room(seq, need, d.step):
                    continue
            blocks.allocate(seq, need)
            self._take(d, seq, new)

    def _admit(self, d: _Draft) -> None:
        """Phase 3: waiting sequences, first come first served, while the KV blocks and max_num_seqs allow."""
        blocks = self.blocks
        self._compact()
        while self.waiting and d.budget > 0 and len(self.running) + self.receiving < self.max_num_seqs:
            seq = self.waiting[0]
            new = min(seq.num_tokens - seq.num_computed, d.budget)
            need = blocks.blocks_needed(seq, new)
            if need > blocks.free:
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            blocks.allocate(seq, need)
            self._take(d, seq, new)

    def complete(self, batch: Batch, t: float) -> list[Sequence]:
        """The iteration's tokens exist at time `t`: sample them; return the sequences that finished."""
        finished: list[Sequence] = []
        running_status = Status.RUNNING
        landed = 0
        for seq in batch.decodes:   # the other hot loop
            seq.in_flight = 0
            if seq.status == running_status:
                landed += 1
                seq.num_output += 1
                seq.token_times.append(t)
                if seq.num_output >= seq.max_tokens:
                    self._finish(seq, t)
                    finished.append(seq)
        for seq in batch.prefills:
            seq.in_flight -= 1
        for seq in batch.sampled:
            if seq.status == running_status:
                landed += 1
                seq.num_output += 1
                seq.token_times.append(t)
                if seq.first_token_time is None:
                    seq.first_token_time = t
                if seq.num_output >= seq.max_tokens:
                    self._finish(seq, t)
                    finished.append(seq)
        self._awaiting -= landed   # aborted ones left the count when they were aborted
        return finished

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _take(d: _Draft, seq: Sequence, new: int) -> None:
        """Put `new` prompt tokens of `seq` into the iteration, with their causal attention pairs."""
        d.attn_pairs += new * (seq.num_computed + (new + 1) / 2)
        seq.num_computed += new
        seq.in_flight += 1
        seq.sched_step = d.step
        d.prefills.append(seq)
        d.prefill_tokens += new
        d.budget -= new
        if seq.num_computed == seq.num_tokens:
            d.sampled.append(seq)

    def _finish(self, seq: Sequence, t: float) -> None:
        seq.status = Status.FINISHED
        seq.finish_time = t
        if not self.hold_kv:
            self.blocks.release(seq)
        self._stale = True

    def _make_room(self, seq: Sequence, need: int, step: int) -> bool:
        """Preempt the newest idle running sequences until `need` blocks are free.

        Returns False when `seq` itself had to go (it is the newest candidate, or the only one), or has to
        wait (an earlier chunk of its prompt is still in flight).
        """
        while self.blocks.free < need:
            victim = None
            for cand in reversed(self.running):
                if cand.status == Status.RUNNING and not cand.in_flight and cand.sched_step != step:
                    victim = cand
                    break
            if victim is None or victim is seq:
                if not seq.in_flight:   # a prompt whose earlier chunk is in flight waits for it instead
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
