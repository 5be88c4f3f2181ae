"""Fluid (steady-state) estimate of a disaggregated configuration: fast enough to screen candidates with.

Not a scheduler: the average iteration of each pool when it is full, on the same performance model.
- Prefill pool: each replica's iterations carry `max_num_batched_tokens` prompt tokens (a 1/PP share per
  micro-batch), at `stage_s` apart: prompts/s = tokens per micro-batch / ISL / stage_s. One prompt alone
  takes its chunks' latency (pipelined over the stages under PP): the TTFT of an idle pool.
- Decode pool: R running sequences per replica (at most `max_num_seqs`, and what the KV cache holds at
  ISL + OSL tokens each, as `steady_state.kv_capacity_seqs` reserves), decoding in PP micro-batches of R/PP;
  a token every round = max(latency, PP · stage_s) of a micro-batch, which is the TPOT. Held to a TPOT
  target, R is the largest batch that meets it. Each request decodes OSL − 1 tokens there (its first came
  from the prefill replica).
- The pair serves the lower of the two pools' request rates (rate-matched when they are equal). TTFT is the
  prefill, its queueing (`ttft_at`: an M/D/1 wait at each prefill replica) and the KV handoff (`KvTransfer`),
  after which the decode replica delivers the first token.
What it leaves out: decode admission waits (none while the decode pool keeps up), the prefill pool's batching
under queueing (M/D/1 serves one prompt at a time), chunking's attention growth within a prompt, prefill
replicas' KV held during handoffs, preemption.
"""

import math
from dataclasses import dataclass

from deployments.engines.sim.disagg import DisaggregatedReplicas
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.steady_state import kv_capacity_seqs
from deployments.engines.sim.work import BatchShape


@dataclass(frozen=True)
class DisaggSteadyState:
    """One disaggregated configuration at full load (rates in requests/s, times in seconds)."""

    prefill_rate: float      # prompts/s the prefill replicas compute together
    decode_rate: float       # requests/s the decode replicas finish together
    decode_running: float    # sequences each decode replica runs
    tpot_s: float            # decode round at that batch: time per output token
    prefill_s: float         # one prompt's prefill on an idle prefill replica
    transfer_s: float        # one prompt's KV handoff
    prefill_replicas: int
    osl: int

    @property
    def rate(self) -> float:
        """Requests/s the pair serves: the slower pool's."""
        return min(self.prefill_rate, self.decode_rate)

    @property
    def limit(self) -> str:
        """The pool that sets the rate: "prefill" or "decode"."""
        return "prefill" if self.prefill_rate <= self.decode_rate else "decode"

    @property
    def output_tokens_per_s(self) -> float:
        return self.rate * self.osl

    def ttft_at(self, rate: float) -> float:
        """TTFT at `rate` requests/s: the prefill, an M/D/1 wait at each prefill replica, and the handoff (inf
        at or beyond the prefill pool's rate)."""
        rho = rate / self.prefill_rate
        if rho >= 1:
            return math.inf
        service = self.prefill_replicas / self.prefill_rate   # one replica's seconds per prompt at full load
        return self.prefill_s + rho * service / (2 * (1 - rho)) + self.transfer_s

    def rate_within(self, ttft_s: float) -> float:
        """The highest rate whose `ttft_at` is at most `ttft_s` (and the decode pool keeps up with): 0 when
        an idle prefill and handoff already exceed it."""
        slack = ttft_s - self.prefill_s - self.transfer_s
        if slack <= 0:
            return 0.0
        service = self.prefill_replicas / self.prefill_rate
        rho = 2 * slack / (service + 2 * slack)     # ttft_at(rho · prefill_rate) == ttft_s
        return min(rho * self.prefill_rate, self.decode_rate)


def _prefill(factory: ReplicaFactory, isl: int) -> tuple[float, float]:
    """(prompts/s of one replica at full load, seconds of one prompt alone)."""
    perf, pp = factory.cost_model, factory.pp
    per_mb = max(1, factory.engine.max_num_batched_tokens // pp)

    def chunk(tokens: int) -> BatchShape:
        return BatchShape(prefill_tokens=tokens, prefill_seqs=max(1, round(tokens / isl)),
                          prefill_attn_pairs=tokens * (isl + 1) / 2.0)

    full = perf.step(chunk(per_mb))
    chunks = math.ceil(isl / per_mb)
    one = perf.step(chunk(math.ceil(isl / chunks)))
    return per_mb / isl / full.stage_s, one.latency_s + (chunks - 1) * one.stage_s


def _round(factory: ReplicaFactory, running: float, isl: int, osl: int) -> float:
    """Seconds between two tokens of a sequence when a decode replica runs `running` of them."""
    perf, pp = factory.cost_model, factory.pp
    per_mb = running / pp
    n = max(1, round(per_mb))
    cost = perf.step(BatchShape(decode_seqs=n, decode_context=round(n * (isl + osl / 2.0))))
    return max(cost.latency_s, pp * cost.stage_s)


def estimate(replicas: DisaggregatedReplicas, isl: int, osl: int, tpot_s: float | None = None) -> DisaggSteadyState:
    """The fluid figures of a disaggregated configuration on ISL/OSL requests; `tpot_s`: hold the decode batch
    to that time per output token (default: as large as memory allows). The handoff is the mean over the
    configuration's (prefill, decode) replica pairs, as least-loaded dispatch spreads requests over them."""
    prefill, decode = replicas.prefill, replicas.decode
    p_rate, p_one = _prefill(prefill, isl)
    hi = float(min(decode.engine.max_num_seqs, kv_capacity_seqs(decode, isl, osl)))
    running = hi
    if tpot_s is not None and _round(decode, hi, isl, osl) > tpot_s:
        lo = 1.0
        if _round(decode, lo, isl, osl) > tpot_s:
            running = lo
        else:
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if _round(decode, mid, isl, osl) <= tpot_s else (lo, mid)
            running = lo
    step = _round(decode, running, isl, osl)
    d_rate = running / step / (osl - 1) if osl > 1 else math.inf
    links = [link.seconds(isl) for row in replicas.links for link in row]
    return DisaggSteadyState(prefill_rate=p_rate * replicas.prefill_replicas,
                             decode_rate=d_rate * replicas.decode_replicas, decode_running=running, tpot_s=step,
                             prefill_s=p_one, transfer_s=sum(links) / len(links),
                             prefill_replicas=replicas.prefill_replicas, osl=osl)
