"""The study's splits of 8-GPU nodes that issue 26's GPU-path tests deploy: replicas of TP1, TP2 and TP4, TP8,
a hybrid and PP8 on one node, and TP8×PP2 over two nodes."""

from schema.deployment import ParallelConfig

ONE_NODE = [
    ParallelConfig(name="tp1x8", tp=1, replicas=8),
    ParallelConfig(name="tp2x4", tp=2, replicas=4),
    ParallelConfig(name="tp4x2", tp=4, replicas=2),
    ParallelConfig(name="tp8", tp=8),
    ParallelConfig(name="tp4pp2", tp=4, pp=2),
    ParallelConfig(name="pp8", pp=8),
]
SPREAD = ParallelConfig(name="tp8pp2", tp=8, pp=2, spread_pp_over_nodes=True)
