"""The transition planner: the steps from the current split of the GPUs to a target, every class served at
every step where the budget allows it.

Input: the serving set (configurations, the routing, where their replicas are), the target (the planner's
pools: shape, replicas, classes), the nodes, each configuration's start time, the drain bound, and whether
the executor can `Scale` a configuration in place. Output: the ordered steps (controllers/transition/steps.py),
each with its reason, and their cost (cost.py).

The rules the steps follow:
- **Keep what the target has.** A live configuration of a target pool's shape (and, without `Scale`, its
  replica count) becomes that pool, at most scaled; a new shape gets a new configuration.
- **Make before break.** New configurations go on free GPUs first; a configuration leaves (routing weight 0,
  drain, remove) or shrinks only once every class it serves has another live configuration. Any live
  configuration can carry any class for a while: a class whose target pool is not up yet stays where it is,
  or borrows the live configurations (weights in proportion to their GPUs) when its own are gone.
- **Hold only when nothing can stay live.** A class is held (its row empty; the ingress queues its requests)
  only when every order of steps over the current configurations and the target's pools passes through a set
  with no live configuration — e.g. TP8 → 2×TP4 on 8 GPUs, where TP8 holds every GPU. (A temporary bridge of
  another shape is not considered: without `Scale`, 3×PP2 → TP4 + 2×TP2 on 8 GPUs holds, where a 1-GPU
  bridge, if the model fits one GPU, would carry every class alone for a while.) Then the hold is as short as
  it can be: hold → drain → remove → deploy → route releases it. On one node a hold is needed exactly when no
  current configuration can become a target pool and no current and target configuration fit side by side
  at their smallest (one replica each with `Scale`, whole configurations without); across nodes placement
  decides too, and the search finds out. Where placement forces it, a kept configuration is replaced by a
  new one.
- **Routing follows the set.** A class goes wholly to its target pool once that pool runs all its target
  replicas; before, to its current configurations and its target pool together (weights ∝ GPUs).
  Every routing change is one `Route` of the whole table, before a configuration shrinks or leaves and
  after one becomes healthy.
- **Feasible at every step.** Each intermediate set fits the nodes as Ray places it (ray_model.py: a new
  replica on the freest node; Serve stops replicas on the emptiest node first), so fragmentation across nodes
  is planned for, not discovered.

The order is found by a best-first search (A*) over the sets reachable with these steps, cheapest first by
cost.py's figures in this order: class-seconds held, GPU-seconds lost, duration, the deepest dip in serving
GPUs, steps. So a hold is taken only when no hold-free order exists, and then the shortest; among orders that
lose the same GPU-seconds (every GPU that changes hands drains once and starts once, whatever the order) the
quickest, then the one that keeps the most GPUs serving throughout.

New configurations are named `<shape>` (`tp4`, `tp4pp2`, `pp8`), or `<shape>-<n>` for the n-th of that shape
in the run: a name is never reused, so the Prometheus series of two configurations never mix.
"""

import heapq
import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from controllers.plan.candidates import Pool, Shape
from controllers.transition.cost import StartSeconds, TransitionCost, held, transition_cost
from controllers.transition.ray_model import Layout, Replica, bundle_nodes, place, stop
from controllers.transition.steps import Deploy, Drain, Remove, Route, Scale, SetView, Step
from deployments.placement import Node, PlacementError, plan_nodes
from deployments.routing import Weights
from schema.deployment import ParallelConfig

State = tuple[tuple[Replica, ...], ...]  # per configuration, its live replicas (oldest first); () = not live
Move = tuple[str, int, int]              # (deploy | up | down | remove, configuration index, replicas after)
Cost = tuple[float, float, float, int, int]  # (class-s held, GPU-s lost, seconds, −fewest GPUs serving, steps)


class TransitionError(ValueError):
    """A transition that cannot be planned; the message names what is wrong and the fix."""


@dataclass(frozen=True)
class ServingSet:
    """What serves now: the configurations, the routing (class → {configuration: weight}; an empty or missing
    row is a held class), and where their replicas are (configuration → per replica its node id, or one per
    pipeline stage of a replica spread over nodes, as `plan_nodes` returns them; default: `plan_nodes`'s own
    placement, which is where `parallax up` expects them — give Ray's actual one when there is more than one
    node)."""

    configs: tuple[ParallelConfig, ...]
    weights: Weights
    placement: Mapping[str, Sequence[Sequence[str]]] | None = None


@dataclass(frozen=True)
class Transition:
    """The steps from the current set to the target, and what they cost."""

    steps: tuple[Step, ...]
    names: tuple[str, ...]    # the configuration that serves each target pool, in the target's order
    configs: tuple[ParallelConfig, ...]  # the target's configurations, in the target's order
    weights: Weights          # the target's routing, in force after the last step
    cost: TransitionCost
    searched: int             # sets the search visited

    @property
    def held(self) -> list[str]:
        """The classes some step holds at the ingress."""
        return sorted({c for s in self.steps if isinstance(s, Route) for c in s.held})


@dataclass(frozen=True)
class _Config:
    """A configuration the transition may have live: a current one, or a new one for a target pool."""

    config: ParallelConfig   # replicas: its count now (current) or the target's (new)
    layout: Layout
    pool: int | None         # the target pool it can serve as (None: it leaves)
    new: bool

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class _Problem:
    configs: tuple[_Config, ...]
    pools: tuple[Pool, ...]
    kept: tuple[int | None, ...]          # per pool: the current configuration matched to it
    fresh: tuple[int, ...]                # per pool: its new configuration
    classes: tuple[str, ...]
    pool_of: Mapping[str, int]
    servers: Mapping[str, tuple[int, ...]]  # per class: the configurations serving it now
    rows: Mapping[str, Mapping[str, float]]  # per class: the routing now (weights > 0 only)
    start: State
    capacity: tuple[int, ...]
    node_ids: tuple[str, ...]
    start_s: StartSeconds                  # cached by configuration name
    drain_s: float
    scale: bool
    sizes: dict[tuple[int, int], ParallelConfig]  # cache of `sized`

    def sized(self, i: int, replicas: int) -> ParallelConfig:
        """Configuration i with `replicas` replicas."""
        key = (i, replicas)
        if key not in self.sizes:
            c = self.configs[i].config
            self.sizes[key] = c if c.replicas == replicas else c.model_copy(update={"replicas": replicas})
        return self.sizes[key]

    def goal(self, i: int) -> int:
        """The replicas configuration i has in the target (0: it leaves)."""
        pool = self.configs[i].pool
        return 0 if pool is None else self.pools[pool].replicas

    def routing_now(self) -> Weights:
        return {cls: dict(row) for cls, row in self.rows.items()}


def plan_transition(current: ServingSet, target: Sequence[Pool], nodes: Sequence[Node], start_s: StartSeconds, *,
                    drain_s: float, scale: bool = True, used_names: Collection[str] = ()) -> Transition:
    """The steps from `current` to `target` on `nodes` (rules in the module docstring).

    `start_s(config)`: seconds until a new replica of `config` is healthy; `drain_s`: the drain bound;
    `scale`: whether the executor can change a configuration's replica count in place; `used_names`:
    configuration names used earlier in the run (never reused). Raises TransitionError when the target
    or the current set does not fit the nodes, or the routing names what does not exist.
    """
    if drain_s < 0:
        raise TransitionError(f"drain_s must be ≥ 0, got {drain_s:g}")
    classes = _classes(target)
    names = {c.name for c in current.configs}
    if len(names) != len(current.configs):
        raise TransitionError("the current set names a configuration twice")
    for cls, row in current.weights.items():
        if cls not in classes:
            raise TransitionError(f"the current routing has class {cls!r}, which no target pool serves; "
                                  f"give the target a pool for it")
        unknown = sorted(n for n, w in row.items() if w > 0 and n not in names)
        if unknown:
            raise TransitionError(f"the current routing of {cls!r} names {', '.join(unknown)}, not in the set")
    gpn = int(max((n.gpus for n in nodes), default=0))
    taken = set(used_names) | names
    fresh_cfgs = []
    for p in target:
        fresh_cfgs.append(_new_config(p, gpn, taken))
        taken.add(fresh_cfgs[-1].name)
    try:
        plan_nodes(fresh_cfgs, nodes)
    except PlacementError as e:
        raise TransitionError(f"the target does not fit the nodes: {e}") from None
    node_index = {n.node_id: i for i, n in enumerate(nodes)}
    placed = _current_placement(current, nodes, node_index)
    cost_cache: dict[str, float] = {}

    best: tuple[Cost, list[Move], int, _Problem] | None = None
    for kept in _matchings(current, target, fresh_cfgs, scale):
        problem = _problem(current, target, fresh_cfgs, kept, classes, placed, nodes, start_s, cost_cache,
                           drain_s, scale)
        found = _search(problem)
        if found and (best is None or found[0] < best[0]):
            best = (*found, problem)
    if best is None:
        raise TransitionError("no order of steps reaches the target on these nodes (Ray places each new replica "
                              "on the freest node); give the target fewer or smaller pools")
    _, path, searched, problem = best
    steps = _materialize(problem, path)
    holders = _holders(problem, _replay(problem, path))
    final_names = tuple(problem.configs[h].name for h in holders)
    final_configs = tuple(problem.sized(h, p.replicas) for h, p in zip(holders, problem.pools, strict=True))
    weights: Weights = {c: {final_names[problem.pool_of[c]]: 1.0} for c in classes}
    cost = transition_cost(_state_view(problem, problem.start, problem.routing_now()), steps,
                           sum(problem.capacity), problem.start_s, drain_s)
    return Transition(tuple(steps), final_names, final_configs, weights, cost, searched)


def shape_name(shape: Shape) -> str:
    """A configuration's name for a shape, as Parallax names them: tp8, tp4pp2, pp8."""
    return "".join(ch for ch in shape.label.lower() if ch.isalnum())


def _new_config(pool: Pool, gpus_per_node: int, taken: set[str]) -> ParallelConfig:
    base = shape_name(pool.shape)
    name = base
    n = 2
    while name in taken:
        name = f"{base}-{n}"
        n += 1
    return ParallelConfig(name=name, tp=pool.shape.tp, pp=pool.shape.pp, replicas=pool.replicas,
                          spread_pp_over_nodes=pool.shape.gpus > gpus_per_node)


def _classes(target: Sequence[Pool]) -> tuple[str, ...]:
    if not target:
        raise TransitionError("the target has no pool; give it at least one")
    out: list[str] = []
    for p in target:
        if not p.classes:
            raise TransitionError(f"target pool {p.label} serves no class; give it one or drop it")
        for c in p.classes:
            if c in out:
                raise TransitionError(f"class {c!r} is in two target pools; route each class to one pool")
            out.append(c)
    return tuple(out)


def _current_placement(current: ServingSet, nodes: Sequence[Node],
                       node_index: Mapping[str, int]) -> dict[str, tuple[Replica, ...]]:
    """Per current configuration, its replicas' node indices; checked against the nodes' GPUs."""
    if current.placement is None:
        try:
            given: Mapping[str, Sequence[Sequence[str]]] = plan_nodes(current.configs, nodes)
        except PlacementError as e:
            raise TransitionError(f"the current set does not fit the nodes: {e}") from None
    else:
        given = current.placement
    used = [0] * len(nodes)
    out: dict[str, tuple[Replica, ...]] = {}
    for c in current.configs:
        layout = Layout.of(c)
        reps = given.get(c.name)
        if reps is None or len(reps) != c.replicas:
            raise TransitionError(f"the placement of {c.name!r} gives {0 if reps is None else len(reps)} "
                                  f"replicas, the configuration has {c.replicas}")
        out[c.name] = tuple(_replica(c.name, r, layout, node_index) for r in reps)
        for r in out[c.name]:
            for b, n in zip(layout.bundles, r, strict=True):
                used[n] += b
    over = [n.node_id for n, u in zip(nodes, used, strict=True) if u > n.gpus]
    if over:
        raise TransitionError(f"the current placement puts more GPUs on node(s) {', '.join(over)} than they have")
    return out


def _replica(name: str, nodes_of: Sequence[str], layout: Layout, node_index: Mapping[str, int]) -> Replica:
    """One replica's bundle nodes; a replica kept on one node may be given as that single node."""
    unknown = [n for n in nodes_of if n not in node_index]
    if unknown:
        raise TransitionError(f"the placement of {name!r} names node(s) {', '.join(unknown)}, not in the nodes")
    replica = bundle_nodes(layout, [node_index[n] for n in nodes_of])
    if replica is None:
        raise TransitionError(f"the placement of {name!r} gives {len(nodes_of)} nodes for a replica of "
                              f"{len(layout.bundles)} bundles")
    return replica


def _matchings(current: ServingSet, target: Sequence[Pool], fresh: Sequence[ParallelConfig],
               scale: bool) -> list[tuple[int | None, ...]]:
    """Every maximal way to keep current configurations as target pools: same shape and placement kind (and,
    without Scale, the same replica count); one configuration per pool. Those that keep the most classes where
    they are come first (a tie in cost goes to them)."""
    options = [[i for i, c in enumerate(current.configs)
                if (c.tp, c.pp) == (f.tp, f.pp) and Layout.of(c).spread == Layout.of(f).spread
                and (scale or c.replicas == f.replicas)] for f in fresh]
    out: list[tuple[int | None, ...]] = []
    for choice in itertools.product(*[[*o, None] for o in options]):
        used = [i for i in choice if i is not None]
        if len(used) != len(set(used)):
            continue
        maximal = all(i is not None or not (set(o) - set(used)) for i, o in zip(choice, options, strict=True))
        if maximal:
            out.append(choice)

    def kept_classes(choice: tuple[int | None, ...]) -> int:
        return sum(1 for i, p in zip(choice, target, strict=True) if i is not None for cls in p.classes
                   if current.weights.get(cls, {}).get(current.configs[i].name, 0) > 0)
    return sorted(out, key=kept_classes, reverse=True)


def _problem(current: ServingSet, target: Sequence[Pool], fresh: Sequence[ParallelConfig],
             kept: tuple[int | None, ...], classes: tuple[str, ...], placed: Mapping[str, tuple[Replica, ...]],
             nodes: Sequence[Node], start_s: StartSeconds, cache: dict[str, float], drain_s: float,
             scale: bool) -> _Problem:
    pool_by_current = {k: j for j, k in enumerate(kept) if k is not None}
    configs = [_Config(c, Layout.of(c), pool_by_current.get(i), False) for i, c in enumerate(current.configs)]
    n_cur = len(configs)
    configs += [_Config(f, Layout.of(f), j, True) for j, f in enumerate(fresh)]
    index = {c.name: i for i, c in enumerate(configs)}
    rows = {cls: {n: float(w) for n, w in current.weights.get(cls, {}).items() if w > 0} for cls in classes}

    def seconds(c: ParallelConfig) -> float:
        if c.name not in cache:
            cache[c.name] = float(start_s(c))
        return cache[c.name]

    return _Problem(
        configs=tuple(configs), pools=tuple(target), kept=kept, fresh=tuple(range(n_cur, len(configs))),
        classes=classes, pool_of={c: j for j, p in enumerate(target) for c in p.classes},
        servers={cls: tuple(index[n] for n in row) for cls, row in rows.items()}, rows=rows,
        start=tuple(placed[c.name] for c in current.configs) + ((),) * len(fresh),
        capacity=tuple(int(n.gpus) for n in nodes), node_ids=tuple(n.node_id for n in nodes), start_s=seconds,
        drain_s=drain_s, scale=scale, sizes={})


# --- the search -------------------------------------------------------------------------------------------------

def _free(p: _Problem, s: State) -> list[int]:
    free = list(p.capacity)
    for i, reps in enumerate(s):
        bundles = p.configs[i].layout.bundles
        for r in reps:
            for b, n in zip(bundles, r, strict=True):
                free[n] -= b
    return free


def _grow(p: _Problem, s: State, i: int, upto: int) -> list[tuple[Replica, ...]]:
    """Config i's replicas after adding one at a time (as Ray places them), up to `upto` replicas in all."""
    free = _free(p, s)
    reps = list(s[i])
    out = []
    layout = p.configs[i].layout
    while len(reps) < upto:
        r = place(free, layout)
        if r is None:
            break
        for b, n in zip(layout.bundles, r, strict=True):
            free[n] -= b
        reps.append(r)
        out.append(tuple(reps))
    return out


def _with(s: State, i: int, reps: tuple[Replica, ...]) -> State:
    return (*s[:i], reps, *s[i + 1:])


def _moves(p: _Problem, s: State) -> list[tuple[Move, State]]:
    out: list[tuple[Move, State]] = []
    for i, c in enumerate(p.configs):
        n = len(s[i])
        goal = p.goal(i)
        if c.new and n == 0:
            grown = _grow(p, s, i, goal)
            for reps in (grown if p.scale else grown[goal - 1:]):
                out.append((("deploy", i, len(reps)), _with(s, i, reps)))
        elif c.pool is not None and 0 < n < goal and p.scale:
            for reps in _grow(p, s, i, goal):
                out.append((("up", i, len(reps)), _with(s, i, reps)))
        if n and not c.new:
            if p.scale:
                for k in range(1, n):
                    out.append((("down", i, k), _with(s, i, stop(s, i, n - k, len(p.capacity)))))
            out.append((("remove", i, 0), _with(s, i, ())))
    return out


def _holders(p: _Problem, s: State) -> list[int]:
    """Per pool, the configuration serving as it: the new one once live, else the kept one."""
    return [f if s[f] or k is None else k for f, k in zip(p.fresh, p.kept, strict=True)]


def _done(p: _Problem, s: State) -> bool:
    holders = _holders(p, s)
    if any(len(s[h]) != pool.replicas for h, pool in zip(holders, p.pools, strict=True)):
        return False
    return all(not reps or i in holders for i, reps in enumerate(s))


def _routing(p: _Problem, s: State) -> Weights:
    """The routing the rules give set `s` (module docstring), by configuration name."""
    out: Weights = {}
    live = [i for i, reps in enumerate(s) if reps]
    for cls in p.classes:
        j = p.pool_of[cls]
        f, k, r = p.fresh[j], p.kept[j], p.pools[j].replicas
        holder = f if s[f] or k is None else k
        if len(s[holder]) >= r:
            out[cls] = {p.configs[holder].name: 1.0}   # the target's row
            continue
        members = [i for i in dict.fromkeys([*(x for x in (k, f) if x is not None), *p.servers[cls]]) if s[i]]
        members = members or live
        if not members:
            out[cls] = {}
        elif set(members) == set(p.servers[cls]) and all(len(s[i]) == len(p.start[i]) for i in members):
            out[cls] = dict(p.rows[cls])
        elif len(members) == 1:
            out[cls] = {p.configs[members[0]].name: 1.0}
        else:
            out[cls] = {p.configs[i].name: float(len(s[i]) * p.configs[i].layout.gpus) for i in members}
    return out


def _state_view(p: _Problem, s: State, weights: Weights) -> SetView:
    return SetView({p.configs[i].name: p.sized(i, len(reps)) for i, reps in enumerate(s) if reps}, weights)


def _move_steps(p: _Problem, s: State, s2: State, move: Move, before: Weights, after: Weights,
                reason: Callable[[str], str] = lambda _: "") -> list[Step]:
    """The steps of one move, `before` the routing in force and `after` the one its set gets."""
    kind, i, k = move
    c = p.configs[i]
    route = [Route(after, reason("route"))] if after != before else []
    nodes = tuple(tuple(p.node_ids[n] for n in (r if c.layout.spread else r[:1])) for r in s2[i])
    if kind == "deploy":
        return [Deploy(p.sized(i, k), reason("deploy"), nodes), *route]
    if kind == "up":
        return [Scale(c.name, k, reason("up"), nodes), *route]
    if kind == "down":
        return [*route, Scale(c.name, k, reason("down"), nodes)]
    return [*route, Drain(c.name, reason("drain")), Remove(c.name, reason("remove"))]


def _edge_cost(p: _Problem, s: State, steps: Sequence[Step], before: Weights) -> Cost:
    budget = sum(p.capacity)
    c = transition_cost(_state_view(p, s, before), steps, budget, p.start_s, p.drain_s)
    return (c.held_class_s, c.lost_gpu_s, c.duration_s, -c.fewest_serving_gpus(budget), len(steps))


def _add(g: Cost, c: Cost) -> Cost:
    """A path's cost extended by one move's: sums, and the deeper of the two dips."""
    return (g[0] + c[0], g[1] + c[1], g[2] + c[2], max(g[3], c[3]), g[4] + c[4])


def _heuristic(p: _Problem, s: State) -> float:
    """A lower bound on the GPU-seconds still to lose: every replica still to start serves nothing while it
    starts, every replica still to go serves nothing while it drains."""
    h = 0.0
    holders = _holders(p, s)
    for j, pool in enumerate(p.pools):
        missing = pool.replicas - len(s[holders[j]])
        if missing > 0:
            k = p.kept[j]
            start = min(p.start_s(p.configs[i].config) for i in (p.fresh[j], *([] if k is None else [k])))
            h += missing * p.configs[p.fresh[j]].layout.gpus * start
    for i, reps in enumerate(s):
        if reps and not p.configs[i].new:
            extra = len(reps) - (p.goal(i) if i in holders else 0)
            h += max(0, extra) * p.configs[i].layout.gpus * p.drain_s
    return h


def _search(p: _Problem) -> tuple[Cost, list[Move], int] | None:
    """The cheapest sequence of moves from the current set to the target (A* on the lost GPU-seconds)."""
    start = p.start
    opening = int(_routing(p, start) != p.routing_now())   # the Route `_materialize` starts with
    origin: Cost = (0.0, 0.0, 0.0, -sum(p.capacity), opening)
    best: dict[State, Cost] = {start: origin}
    parent: dict[State, tuple[State, Move]] = {}
    tie = itertools.count()
    heap = [(_priority(p, start, origin), next(tie), start)]
    closed: set[State] = set()
    while heap:
        _, _, s = heapq.heappop(heap)
        if s in closed:
            continue
        closed.add(s)
        g = best[s]
        if _done(p, s):
            return g, _path(parent, s), len(closed)
        before = _routing(p, s)
        for move, s2 in _moves(p, s):
            if s2 in closed:
                continue
            after = _routing(p, s2)
            c = _edge_cost(p, s, _move_steps(p, s, s2, move, before, after), before)
            g2 = _add(g, c)
            if s2 not in best or g2 < best[s2]:
                best[s2] = g2
                parent[s2] = (s, move)
                heapq.heappush(heap, (_priority(p, s2, g2), next(tie), s2))
    return None


def _priority(p: _Problem, s: State, g: Cost) -> Cost:
    return (g[0], g[1] + _heuristic(p, s), *g[2:])


def _path(parent: Mapping[State, tuple[State, Move]], s: State) -> list[Move]:
    out = []
    while s in parent:
        s, move = parent[s]
        out.append(move)
    return out[::-1]


def _after(p: _Problem, s: State, move: Move) -> State:
    return next(s2 for m, s2 in _moves(p, s) if m == move)


def _replay(p: _Problem, path: Sequence[Move]) -> State:
    s = p.start
    for move in path:
        s = _after(p, s, move)
    return s


# --- the steps, with their reasons ----------------------------------------------------------------------------

def _materialize(p: _Problem, path: Sequence[Move]) -> list[Step]:
    """The path's steps with their reasons, after a Route to the rules' routing of the current set where the
    routing now differs (a class held or new with a configuration live, a class whose kept pool is ready);
    a Route right after a Route replaces it."""
    steps: list[Step] = []
    s = p.start
    weights = routed = p.routing_now()   # in force, and before the last step if that is a Route
    first = _routing(p, s)
    if first != weights:
        steps.append(Route(first, _Reasons(p, s, s, ("route", -1, 0), weights, first, ()).line("route")))
        weights = first
    for n, move in enumerate(path):
        s2 = _after(p, s, move)
        after = _routing(p, s2)
        before = weights
        if steps and isinstance(steps[-1], Route) and move[0] in ("down", "remove") and after != weights:
            steps.pop()
            before = routed
        why = _Reasons(p, s, s2, move, before, after, path[n + 1:])
        new = _move_steps(p, s, s2, move, before, after, why.line)
        steps += new
        if isinstance(new[-1], Route):
            routed = before
        s, weights = s2, after
    return steps


@dataclass(frozen=True)
class _Reasons:
    p: _Problem
    s: State
    s2: State
    move: Move
    before: Weights
    after: Weights
    rest: Sequence[Move]

    def line(self, kind: str) -> str:
        return getattr(self, "_" + kind)()

    def _classes(self, i: int) -> str:
        c = self.p.configs[i]
        return ", ".join(self.p.pools[c.pool].classes) if c.pool is not None else "no class"

    def _next_start(self) -> str | None:
        nxt = next((m for m in self.rest if m[0] in ("deploy", "up")), None)
        return None if nxt is None else self.p.configs[nxt[1]].name

    def _serving(self) -> list[str]:
        return sorted({n for row in self.before.values() for n, w in row.items() if w > 0})

    def _deploy(self) -> str:
        _, i, k = self.move
        r = self.p.goal(i)
        part = f"; {k} of its {r} replicas fit now, the rest once GPUs are freed" if k < r else ""
        waiting = held(SetView({}, self.before))
        if waiting:
            return f"for {self._classes(i)}, on the GPUs just freed; the requests of {', '.join(waiting)} wait " \
                   f"in the ingress queue until it is healthy{part}"
        return f"for {self._classes(i)}, on free GPUs with {', '.join(self._serving())} still serving " \
               f"(make-before-break){part}"

    def _up(self) -> str:
        _, i, k = self.move
        r = self.p.goal(i)
        return f"{k - len(self.s[i])} more replica(s) on the GPUs freed, {k} of the target's {r}"

    def _down(self) -> str:
        _, i, k = self.move
        c = self.p.configs[i]
        freed = (len(self.s[i]) - k) * c.layout.gpus
        nxt = self._next_start()
        target = k == self.p.goal(i)
        what = "to the target's replica count" if target else f"frees {freed} GPUs" + (f" for {nxt}" if nxt else "")
        return f"{what}; its {k} remaining replica(s) keep serving"

    def _remove(self) -> str:
        _, i, _ = self.move
        c = self.p.configs[i]
        nxt = self._next_start()
        gone = f"its {len(self.s[i]) * c.layout.gpus} GPUs are free afterwards" + (f" for {nxt}" if nxt else "")
        if c.pool is not None:
            return f"replaced by {self.p.configs[self.p.fresh[c.pool]].name}, placed where the target fits; {gone}"
        return f"not in the target; {gone}"

    def _drain(self) -> str:
        return f"weight 0 in every class; its in-flight requests finish (at most {self.p.drain_s:g} s)"

    def _route(self) -> str:
        why: dict[str, list[str]] = {}
        holders = _holders(self.p, self.s2)
        for cls, row in self.after.items():
            if row == self.before.get(cls, {}):
                continue
            j = self.p.pool_of[cls]
            own = {self.p.configs[i].name for i in (*self.p.servers[cls], holders[j])}
            if not row:
                text = f"held: no configuration can stay live while {self.p.configs[self.move[1]].name}'s GPUs are " \
                       f"freed (no order of steps avoids it)"
            elif held(SetView({}, {cls: self.before.get(cls, {})})):
                text = f"released to {', '.join(row)}"
            elif list(row) == [self.p.configs[holders[j]].name]:
                up, r = len(self.s2[holders[j]]), self.p.pools[j].replicas
                text = "to its target pool" + (f" ({up} of its {r} replicas up)" if up < r else "")
            elif set(row) <= own:
                text = "to its current configurations and target pool until that runs all its replicas"
            else:
                text = f"borrows {', '.join(n for n in row if n not in own)} until its target pool is up"
            why.setdefault(text, []).append(cls)
        return "; ".join(f"{', '.join(classes)} {text}" for text, classes in why.items())

