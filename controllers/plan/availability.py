"""Availability: a deployment's expected capacity when GPUs fail, for `parallax plan --gpu-failure-rate`.

A TP or PP replica is one failure domain: any of its g GPUs failing takes the whole replica down until it
restarts. The model, per replica and independently of the others:

- while up, it fails at λ = g·R per hour (R: failures per GPU-hour); once down it stays down T (detection and
  restart), so it is down a share q = λT / (1 + λT) of the time (an alternating renewal process: mean up
  time 1/λ, mean down time T);
- a pool of r such replicas has k of them down with probability C(r, k) q^k (1 − q)^(r−k);
- with u of r up, a pool carries u/r of its capacity (its share of the traffic spreads over the replicas that
  serve; a little less in truth, since fewer replicas batch less together);
- a deployment's capacity in a state is, as the planner computes it, the lowest over its pools of (pool
  capacity ÷ its classes' share); its expected capacity sums that over every state of its replicas, weighted
  by the state's probability.

The planner ranks by expected capacity (and goodput per GPU scaled alike): with R = 0, q = 0 and the ranking
is exactly the one without failures. For 8×TP1 and TP8 the expected share of capacity lost is q(1) against
q(8) ≈ 8·q(1): a failure rate high enough makes the more replicated split win.

Defaults, from public fleet figures:
- R: The Llama 3 Herd of Models (Meta, 2024, §3.3.4): in a 54-day snapshot of pre-training on 16,384 H100
  GPUs, 419 unexpected interruptions, about 78% attributed to confirmed or suspected hardware (GPU faults,
  HBM3 included, the largest share). 0.78 × 419 / (16,384 GPUs × 54 days × 24 h) = 1.54e-5 failures per
  GPU-hour, about one failure in 7.4 GPU-years.
- T: 300 s, a replica's restart after its GPU failed: Serve's detection (3 failed health checks 5 s apart,
  deployments/app.py) and a cold start of a large model, minutes (weights from local storage, torch.compile,
  CUDA-graph capture: LIVE-CONTROL.md; a 35B model cold-starts in "five minutes or more" from local NVMe,
  route179.dev 2026-06-30, and three vLLM engines take about three minutes on this 2-core machine).
  Give the restart your own deployment measures with --restart-s.
"""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

# 0.78 × 419 hardware interruptions over 16,384 GPUs × 54 days (The Llama 3 Herd of Models, 2024).
LLAMA3_GPU_FAILURE_RATE = 0.78 * 419 / (16_384 * 54 * 24)
DEFAULT_RESTART_S = 300.0


@dataclass(frozen=True)
class Availability:
    """How often a GPU fails (per GPU-hour) and how long a replica that lost one stays down (seconds)."""

    gpu_failure_rate: float = LLAMA3_GPU_FAILURE_RATE
    restart_s: float = DEFAULT_RESTART_S

    def down_share(self, gpus: int) -> float:
        """The share of the time a replica of `gpus` GPUs is down."""
        x = gpus * self.gpu_failure_rate * self.restart_s / 3600.0
        return x / (1.0 + x)

    def failures_per_day(self, gpus: int) -> float:
        """Expected replica failures a day among `gpus` GPUs (each failure takes down the replica it is in)."""
        return gpus * self.gpu_failure_rate * 24.0


@dataclass(frozen=True)
class PoolUp:
    """One pool as the availability model sees it."""

    replicas: int
    gpus_per_replica: int
    rate: float          # the deployment's rate this pool carries when every replica is up (capacity ÷ share)


def expected_share(pools: Sequence[PoolUp], a: Availability) -> float:
    """E[capacity over the states of the replicas] ÷ the capacity with every replica up (1 when nothing fails
    or the deployment carries nothing)."""
    full = min((p.rate for p in pools), default=0.0)
    if full <= 0 or a.gpu_failure_rate <= 0 or a.restart_s <= 0:
        return 1.0
    per_pool = []
    for p in pools:
        q = a.down_share(p.gpus_per_replica)
        per_pool.append([(math.comb(p.replicas, u) * (1 - q) ** u * q ** (p.replicas - u), p.rate * u / p.replicas)
                         for u in range(p.replicas + 1)])
    expected = 0.0
    for state in itertools.product(*per_pool):
        expected += math.prod(prob for prob, _ in state) * min(rate for _, rate in state)
    return expected / full


def one_failure(pools: Sequence[PoolUp], pool: int) -> float:
    """The share of the deployment's capacity one replica of pool `pool` going down takes away."""
    full = min(p.rate for p in pools)
    if full <= 0:
        return 0.0
    hit = pools[pool]
    left = min(hit.rate * (hit.replicas - 1) / hit.replicas,
               min((p.rate for i, p in enumerate(pools) if i != pool), default=math.inf))
    return 1.0 - left / full
