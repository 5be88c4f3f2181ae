"""How fast the transition planner answers: random current → target splits of 8 GPUs (one node) and 16 (two
nodes of 8), 1–3 SLA classes, with and without `Scale`.

    .venv/bin/python -m bench.transition_speed [--pairs 300] [--seed 0]

Each split is a random grouping of the classes into pools, each pool a random TP×PP shape (TP ≤ 8; PP over
whole nodes only) and replica count within what is left of the budget, kept only if it packs on the nodes.
The current set's replicas are where `plan_nodes` puts them. Prints, per budget and option, the planning time
(median, p99, max), the sets the search visited (median, max) and how many plans hold a class.
"""

import argparse
import random
import statistics
import time

from controllers.plan.candidates import Pool, Shape
from controllers.transition.planner import ServingSet, plan_transition
from deployments.placement import Node, PlacementError, plan_nodes
from schema.deployment import ParallelConfig

CLASSES = ("chat", "summarize", "batch")
GPN = 8


def config(name: str, pool: Pool) -> ParallelConfig:
    return ParallelConfig(name=name, tp=pool.shape.tp, pp=pool.shape.pp, replicas=pool.replicas,
                          spread_pp_over_nodes=pool.shape.gpus > GPN)


def split(rng: random.Random, classes: list[str], nodes: list[Node]) -> list[Pool]:
    """A random deployment of the nodes' GPUs that packs."""
    total = int(sum(n.gpus for n in nodes))
    shapes = [Shape(tp, pp) for tp in (1, 2, 4, 8) for pp in (1, 2, 4, 8, 16)
              if tp * pp <= total and (tp * pp <= GPN or tp * pp % GPN == 0)]
    while True:
        order = classes[:]
        rng.shuffle(order)
        cuts = sorted(rng.sample(range(1, len(order)), rng.randint(0, len(order) - 1)))
        groups = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
        left, pools = total, []
        for g in groups:
            options = [s for s in shapes if s.gpus <= left]
            if not options:
                break
            s = rng.choice(options)
            r = rng.randint(1, left // s.gpus)
            pools.append(Pool(s, r, tuple(c for c in classes if c in g)))
            left -= s.gpus * r
        if len(pools) < len(groups):
            continue
        try:
            plan_nodes([config(f"p{i}", p) for i, p in enumerate(pools)], nodes)
        except PlacementError:
            continue
        return pools


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"{'budget':>16} {'scale':>5} {'pairs':>5} {'ms p50':>7} {'ms p99':>7} {'ms max':>7} "
          f"{'sets p50':>8} {'sets max':>8} {'holds':>5}")
    for n_nodes in (1, 2):
        nodes = [Node(f"n{i}", float(GPN)) for i in range(n_nodes)]
        pairs = []
        for _ in range(args.pairs):
            classes = list(CLASSES[:rng.randint(1, 3)])
            pairs.append((split(rng, classes, nodes), split(rng, classes, nodes)))
        for scale in (True, False):
            times, sets, holds = [], [], 0
            for now, target in pairs:
                configs = tuple(config(f"c{i}", p) for i, p in enumerate(now))
                weights = {c: {f"c{i}": 1.0} for i, p in enumerate(now) for c in p.classes}
                t0 = time.perf_counter()
                t = plan_transition(ServingSet(configs, weights), target, nodes,
                                    lambda c: 20.0 + 2.0 * c.gpus_per_replica, drain_s=10.0, scale=scale)
                times.append((time.perf_counter() - t0) * 1e3)
                sets.append(t.searched)
                holds += bool(t.held)
            q = statistics.quantiles(times, n=100)
            print(f"{f'{GPN * n_nodes} GPUs, {n_nodes} node(s)':>16} {'yes' if scale else 'no':>5} {len(pairs):>5} "
                  f"{statistics.median(times):7.1f} {q[98]:7.1f} {max(times):7.1f} "
                  f"{statistics.median(sets):8.0f} {max(sets):8d} {holds:>5}")


if __name__ == "__main__":
    main()
