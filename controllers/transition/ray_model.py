"""Where Ray puts a new replica's GPUs, and which replicas Serve stops on a scale-down: the planner's model.

A replica is one placement group (`deployments/placement.replica_placement`) of one-GPU bundles, one per rank:
STRICT_PACK, all on one node; or PACK (PP stages spread over nodes), the bundles filling one node and overflowing
to the next. vLLM numbers ranks node by node, so a TP group must not straddle nodes: a spread replica whose
bundles leave a node with a part of a TP group fails to start (engines/vllm/ray_workers.py), and the model
counts such a placement as impossible.
- Placing: Ray's GCS scores every node that fits by Σ over the requested resources of (available − requested) ÷
  available and takes the highest (`LeastResourceScorer`, ray src/ray/raylet/scheduling/policy/scorer.cc):
  the node with the most free GPUs — not the fullest (the model scores the GPU term only). STRICT_PACK asks
  for the sum of its bundles on one node; PACK places its first bundle on the best node, as many more there as
  fit, then moves to the next best (`BundlePackSchedulingPolicy`). Ray breaks ties by hash order; the model
  takes the lowest node index.
- Stopping: Serve stops replicas on the nodes that hold the fewest running replicas first, the newest first
  within a node (`DeploymentScheduler._get_replicas_to_stop`, ray/serve/_private/deployment_scheduler.py);
  the model counts the GPU replicas it knows (not the ingress) and ignores the head-node rule.
So the plan predicts the placement; an executor that finds Ray chose otherwise re-plans from what it sees.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from deployments.placement import replica_placement
from schema.deployment import ParallelConfig

Replica = tuple[int, ...]  # the node index of each of the replica's bundles (bundle 0 hosts the replica actor)


@dataclass(frozen=True)
class Layout:
    """One replica's placement group: GPUs per bundle, whether its bundles may land on different nodes, and
    the bundles of one TP group (consecutive bundles that must share a node)."""

    bundles: tuple[int, ...]
    spread: bool
    group: int = 1

    @classmethod
    def of(cls, config: ParallelConfig) -> "Layout":
        p = replica_placement(config, 0.0)
        return cls(tuple(int(b["GPU"]) for b in p.bundles), p.strategy == "PACK", config.tp)

    @property
    def gpus(self) -> int:
        return sum(self.bundles)


def bundle_nodes(layout: Layout, nodes: Sequence[int]) -> Replica | None:
    """`plan_nodes`'s form of a replica's place (its one node, or one node per pipeline stage) or a node per
    bundle, as the node of each bundle; None when the count fits none of these."""
    idx = tuple(nodes)
    if len(idx) == 1:
        return idx * len(layout.bundles)
    if len(idx) * layout.group == len(layout.bundles):
        return tuple(n for n in idx for _ in range(layout.group))
    return idx if len(idx) == len(layout.bundles) else None


def place(free: Sequence[int], layout: Layout) -> Replica | None:
    """The nodes Ray gives a new replica, given each node's free GPUs, or None when it cannot be placed."""
    if not layout.spread:
        fits = [n for n, f in enumerate(free) if f >= layout.gpus]
        if not fits:
            return None
        best = max(fits, key=lambda n: (free[n], -n))
        return (best,) * len(layout.bundles)
    left = list(free)
    out: list[int | None] = [None] * len(layout.bundles)
    todo = sorted(range(len(layout.bundles)), key=lambda b: -layout.bundles[b])
    candidates = set(range(len(free)))
    while todo:
        fits = [n for n in candidates if left[n] >= layout.bundles[todo[0]]]
        if not fits:
            return None
        best = max(fits, key=lambda n: (left[n], -n))
        for b in list(todo):
            if left[best] >= layout.bundles[b]:
                left[best] -= layout.bundles[b]
                out[b] = best
                todo.remove(b)
        candidates.discard(best)
    placed = tuple(n for n in out if n is not None)
    groups = [placed[i:i + layout.group] for i in range(0, len(placed), layout.group)]
    return placed if all(len(set(g)) == 1 for g in groups) else None


def stop(replicas: Sequence[Sequence[Replica]], config: int, count: int, nodes: int) -> tuple[Replica, ...]:
    """What is left of `replicas[config]` (oldest first) after Serve stops `count` of them."""
    per_node = [0] * nodes
    for reps in replicas:
        for r in reps:
            per_node[r[0]] += 1
    mine = list(replicas[config])
    order = sorted(range(len(mine)), key=lambda i: (per_node[mine[i][0]], mine[i][0], -i))
    gone = set(order[:count])
    return tuple(r for i, r in enumerate(mine) if i not in gone)
