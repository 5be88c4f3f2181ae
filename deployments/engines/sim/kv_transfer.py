"""What one KV-cache handoff costs: a prompt's KV cache copied from a prefill replica to a decode replica.

Both replicas hold the KV cache split over their GPUs (TP splits the KV heads, PP the layers), and every GPU
pair whose shards overlap copies its part at once. A handoff of n tokens takes

    kv_transfer_us + n · max(send bytes per token / send bandwidth, receive bytes per token / receive bandwidth)

over the busiest GPU of each side (`kv_bytes_per_token`, the memory model's own count). Bandwidth, one way, at
the calibration's `link_fraction` (as pipeline transfers are priced):
- same node: the fabric between two GPUs (`LinkSpec.group_bandwidth`): on a switch (NVLink) one GPU's port
  whatever the number of peers; on a mesh (Infinity Fabric) one link per peer, so a GPU that copies to (or
  from) k GPUs of the other side drives k links;
- across nodes: each GPU's own NIC (`inter_node_gbps`).
Pure arithmetic; the simulator's event core decides when a handoff starts (deployments/engines/sim/core.py).
"""

import math
from dataclasses import dataclass

from deployments.catalog.gpus import GB, GpuSpec
from deployments.catalog.memory import kv_bytes_per_token
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.calibration import DEFAULT_CALIBRATION, Calibration
from schema.dtypes import Dtype


@dataclass(frozen=True)
class KvTransfer:
    """The handoff cost between one prefill shape and one decode shape over one kind of path."""

    latency_s: float
    per_token_s: float       # seconds per prompt token on the busier side
    bytes_per_token: float   # the whole KV cache of one token (every layer and KV head, once)

    def seconds(self, tokens: int) -> float:
        """Time to hand over the KV cache of a `tokens`-token prompt."""
        return self.latency_s + tokens * self.per_token_s

    @classmethod
    def between(cls, model: ModelSpec, gpu: GpuSpec, kv_dtype: Dtype, prefill: tuple[int, int],
                decode: tuple[int, int], cross_node: bool, calibration: Calibration | None = None) -> "KvTransfer":
        """From replicas of (tp, pp) `prefill` to replicas of (tp, pp) `decode` of `model` on `gpu`, inside a
        node or (`cross_node`) through the GPUs' NICs."""
        (tp_p, pp_p), (tp_d, pp_d) = prefill, decode
        kv = model.num_kv_heads
        # Copies of each KV head per side (TP beyond the KV heads replicates them): a sender copies its heads to
        # every receiver that holds them.
        copies_p, copies_d = max(1, tp_p // kv), max(1, tp_d // kv)
        send = kv_bytes_per_token(model, kv_dtype, tp_p, pp_p) * max(1.0, copies_d / copies_p)
        recv = kv_bytes_per_token(model, kv_dtype, tp_d, pp_d)
        # Peers of one GPU on the other side: the other side's shards its heads and layers overlap.
        fan_out = max(1, math.ceil(tp_d / tp_p)) * max(1, math.ceil(pp_d / pp_p))
        fan_in = max(1, math.ceil(tp_p / tp_d)) * max(1, math.ceil(pp_p / pp_d))
        frac = (calibration or DEFAULT_CALIBRATION).for_gpu(gpu).link_fraction
        if cross_node:
            send_bw = recv_bw = gpu.inter_node_gbps * GB * frac
        else:
            send_bw = gpu.link.group_bandwidth(1 + fan_out) * frac
            recv_bw = gpu.link.group_bandwidth(1 + fan_in) * frac
        whole = 2 * model.num_layers * kv * model.head_dim * kv_dtype.bytes
        return cls(gpu.kv_transfer_us * 1e-6, max(send / send_bw, recv / recv_bw), whole)
