"""Where a configuration's GPUs go on a (possibly multi-node) Ray cluster.

A replica of TP×PP gets one Ray placement group. A bundle never spans nodes, so:
- by default the replica is one node's worth: one GPU bundle per GPU, STRICT_PACK (TP and PP inside a node);
- with `spread_pp_over_nodes`, one bundle of `tp` GPUs per pipeline stage, PACK: each stage's TP group
  stays inside a node, while stages may land on different nodes when no single node has room.
Serve places the replica actor itself in bundle 0, so that bundle also carries the actor's CPU.

Ray leaves a placement group that cannot be placed pending for ever, with no error; `plan_nodes` checks
beforehand, against the cluster's nodes, that every replica has somewhere to go.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schema.deployment import ParallelConfig, ReplicaGroup, Role


@dataclass(frozen=True)
class ReplicaPlacement:
    """Serve's `placement_group_bundles` / `placement_group_strategy` for one replica."""

    bundles: list[dict[str, float]]
    strategy: str

    def as_deployment_options(self) -> dict[str, Any]:
        return {"placement_group_bundles": self.bundles, "placement_group_strategy": self.strategy}


def replica_placement(cfg: ParallelConfig, replica_cpus: float) -> ReplicaPlacement:
    """The placement group of one replica of `cfg`; the replica actor's `replica_cpus` go in bundle 0."""
    if cfg.spread_pp_over_nodes and cfg.pp > 1:
        bundles = [{"GPU": float(cfg.tp)} for _ in range(cfg.pp)]
        strategy = "PACK"
    else:
        bundles = [{"GPU": 1.0} for _ in range(cfg.gpus_per_replica)]
        strategy = "STRICT_PACK"
    bundles[0] = {"CPU": replica_cpus, **bundles[0]}
    return ReplicaPlacement(bundles=bundles, strategy=strategy)


@dataclass(frozen=True)
class Node:
    """A Ray node that can host GPU bundles."""

    node_id: str
    gpus: float
    resources: frozenset[str] = frozenset()


def gpu_nodes(ray_nodes: Iterable[Mapping[str, Any]]) -> list[Node]:
    """The alive nodes with GPUs, from `ray.nodes()`."""
    out = []
    for n in ray_nodes:
        res = n.get("Resources", {})
        if n.get("Alive") and res.get("GPU", 0) > 0:
            out.append(Node(node_id=n["NodeID"], gpus=float(res["GPU"]), resources=frozenset(res)))
    return out


class PlacementError(ValueError):
    """The configurations cannot all be placed on the cluster's nodes."""


def plan_nodes(configs: Sequence[ParallelConfig], nodes: Sequence[Node]) -> dict[str, list[list[str]]]:
    """A node for every stage of every replica (first-fit decreasing), or PlacementError saying why not.

    Returns config name → one list per replica of node ids (a disaggregated configuration's prefill replicas,
    then its decode replicas): one per pipeline stage when the replica spreads its stages over nodes, else the
    single node holding the whole replica. Ray makes its own choice; this proves that one exists, so a
    deployment never hangs waiting for GPUs.
    """
    units: list[tuple[float, str, int, ReplicaGroup]] = []  # (GPUs, config, replica, its group), stages in order
    for c in configs:
        r = 0
        for g in c.groups:
            for _ in range(g.replicas):
                if g.spread_pp_over_nodes and g.pp > 1:
                    units += [(float(g.tp), c.name, r, g)] * g.pp
                else:
                    units.append((float(g.gpus_per_replica), c.name, r, g))
                r += 1
    free = {n.node_id: n.gpus for n in nodes}
    largest = max(free.values(), default=0.0)
    plan: dict[str, list[list[str]]] = {c.name: [[] for _ in range(c.num_replicas)] for c in configs}
    for gpus, name, replica, g in sorted(units, key=lambda u: -u[0]):
        node = next((nid for nid, f in free.items() if f >= gpus), None)
        if node is None:
            spread = g.spread_pp_over_nodes and g.pp > 1
            what = f"a {g.role + ' ' if g.role else ''}{'TP group' if spread else 'replica'}"
            if gpus > largest:
                raise PlacementError(
                    f"configuration {name!r}: {what} needs {gpus:g} GPUs on one node but the largest node has "
                    f"{largest:g}; lower {g.field}tp"
                    + ("" if g.spread_pp_over_nodes else f" or {g.field}pp, or set spread_pp_over_nodes"))
            total = sum(n.gpus for n in nodes)
            need = sum(c.gpus for c in configs)
            raise PlacementError(
                f"the configurations need {need} GPUs in units of up to {largest:g} per node; the cluster's "
                f"{len(nodes)} node(s) have {total:g} in all ({', '.join(f'{n.gpus:g}' for n in nodes)}): "
                f"{name!r} replica {replica} does not fit; remove configurations or add nodes")
        free[node] -= gpus
        plan[name][replica].append(node)
    return plan


def inter_node_hops(g: ParallelConfig | ReplicaGroup, gpus_per_node: int) -> int:
    """Pipeline transfers that cross nodes when a spread replica's stages fill nodes in order: one per
    extra node it needs (0 for a replica kept on one node)."""
    if not (g.spread_pp_over_nodes and g.pp > 1):
        return 0
    stages_per_node = max(1, gpus_per_node // g.tp)
    return -(-g.pp // stages_per_node) - 1


def role_nodes(cfg: ParallelConfig, gpus_per_node: int) -> dict[Role, list[int | None]]:
    """Where a disaggregated configuration's replicas sit, for the simulator to price each KV handoff: node
    indices filled in order (prefill replicas first, each on the first node with room), None for a replica
    whose pipeline stages span nodes. A packing, not Ray's choice: Ray places placement groups as it likes."""
    free: list[int] = []
    out: dict[Role, list[int | None]] = {}
    for g in cfg.groups:
        if g.role is None:
            raise ValueError(f"configuration {cfg.name!r} is not disaggregated")
        where: list[int | None] = []
        for _ in range(g.replicas):
            if g.gpus_per_replica > gpus_per_node:
                where.append(None)
                continue
            node = next((i for i, f in enumerate(free) if f >= g.gpus_per_replica), None)
            if node is None:
                free.append(gpus_per_node)
                node = len(free) - 1
            free[node] -= g.gpus_per_replica
            where.append(node)
        out[g.role] = where
    return out
