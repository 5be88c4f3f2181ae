"""The transition planner: from any split of 8 GPUs (one node) or 16 (two nodes) to any other, every step fits
the nodes, every class has a live configuration or is held, a hold happens only where no order of steps (over
the current configurations and the target's shapes) can avoid it — checked by an exhaustive search of its own,
and on one node by the exact rule —, and the last set is the target."""

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from controllers.plan.candidates import Pool, Shape, class_partitions
from controllers.transition.planner import ServingSet, Transition, TransitionError, plan_transition
from controllers.transition.ray_model import Layout, Replica, bundle_nodes, place, stop
from controllers.transition.steps import Deploy, Drain, Remove, Route, Scale, Step
from deployments.placement import Node, PlacementError, plan_nodes
from schema.deployment import ParallelConfig

CLASSES = ("chat", "summarize", "batch")
DRAIN_S = 10.0


def start_s(c: ParallelConfig) -> float:
    """A start time that grows with the replica's GPUs, as weights ÷ host-to-device bandwidth does."""
    return 20.0 + 2.0 * c.gpus_per_replica


def nodes_of(n: int, gpus: int = 8) -> list[Node]:
    return [Node(f"n{i}", float(gpus)) for i in range(n)]


def config(name: str, tp: int = 1, pp: int = 1, replicas: int = 1, gpn: int = 8) -> ParallelConfig:
    return ParallelConfig(name=name, tp=tp, pp=pp, replicas=replicas, spread_pp_over_nodes=tp * pp > gpn)


# --- a model of the serving set, replaying the steps ------------------------------------------------------------

class Fleet:
    """GPUs held per node, the live configurations with their replicas' nodes, the routing; each step checked,
    and the nodes a step expects checked against where Ray would put (or Serve would stop) the replicas."""

    def __init__(self, current: ServingSet, nodes: Sequence[Node], placement: dict[str, list[list[str]]],
                 classes: Sequence[str]):
        self.ids = [n.node_id for n in nodes]
        self.capacity = [int(n.gpus) for n in nodes]
        self.live: dict[str, tuple[ParallelConfig, list[Replica]]] = {
            c.name: (c, [self.replica(c, r) for r in placement[c.name]]) for c in current.configs}
        self.weights = {cls: {n: w for n, w in current.weights.get(cls, {}).items() if w > 0} for cls in classes}
        self.ever = set(self.live)
        self.drained: set[str] = set()
        self.check_fits()

    def replica(self, c: ParallelConfig, nodes: Sequence[str]) -> Replica:
        """`plan_nodes`'s form (one node, or one per stage) as the node of each bundle."""
        replica = bundle_nodes(Layout.of(c), [self.ids.index(n) for n in nodes])
        assert replica is not None
        return replica

    def free(self) -> list[int]:
        free = list(self.capacity)
        for c, reps in self.live.values():
            for r in reps:
                for b, n in zip(Layout.of(c).bundles, r, strict=True):
                    free[n] -= b
        return free

    def check_fits(self) -> None:
        """Fits as placed, and passes the check `parallax up` makes (which may re-pack; ours may not)."""
        assert min(self.free()) >= 0, self.free()
        plan_nodes([c for c, _ in self.live.values()], [Node(i, float(g)) for i, g in zip(self.ids, self.capacity,
                                                                                          strict=True)])

    def placed(self, c: ParallelConfig, count: int) -> list[Replica]:
        """Where Ray puts `count` new replicas of `c`, one after another."""
        free, out = self.free(), []
        for _ in range(count):
            r = place(free, Layout.of(c))
            assert r is not None, f"no room for a replica of {c.name}"
            for b, n in zip(Layout.of(c).bundles, r, strict=True):
                free[n] -= b
            out.append(r)
        return out

    def routed(self, name: str) -> bool:
        return any(row.get(name, 0) > 0 for row in self.weights.values())

    def apply(self, step: Step) -> None:
        match step:
            case Deploy(config=c, nodes=nodes):
                assert c.name not in self.ever, f"name {c.name} reused"
                self.ever.add(c.name)
                reps = self.placed(c, c.replicas)
                assert [self.replica(c, r) for r in nodes] == reps, "not where Ray puts it"
                self.live[c.name] = (c, reps)
            case Scale(name=name, replicas=k, nodes=nodes):
                c, reps = self.live[name]
                assert k >= 1 and k != c.replicas
                if k < c.replicas:
                    names = list(self.live)
                    after = list(stop([r for _, r in self.live.values()], names.index(name), c.replicas - k,
                                      len(self.ids)))
                else:
                    after = reps + self.placed(c, k - c.replicas)
                assert [self.replica(c, r) for r in nodes] == after, "not the replicas Ray and Serve leave"
                self.live[name] = (c.model_copy(update={"replicas": k}), after)
            case Route(weights=w):
                assert set(w) == set(self.weights), "a Route sets the whole table"
                dead = {n for row in w.values() for n, x in row.items() if x > 0 and n not in self.live}
                assert not dead, f"routes to {dead}, not live"
                self.weights = {cls: {n: x for n, x in row.items() if x > 0} for cls, row in w.items()}
                self.drained -= {n for row in self.weights.values() for n in row}
            case Drain(name=name):
                assert name in self.live and not self.routed(name), f"drain {name} while routed"
                self.drained.add(name)
            case Remove(name=name):
                assert name in self.drained, f"remove {name} before its drain"
                del self.live[name]
        self.check_fits()


def replay(current: ServingSet, t: Transition, pools: Sequence[Pool], nodes: Sequence[Node],
           placement: dict[str, list[list[str]]]) -> Fleet:
    fleet = Fleet(current, nodes, placement, [c for p in pools for c in p.classes])
    for step in t.steps:
        fleet.apply(step)
    # the last set is the target: each pool's configuration with its replicas, routed exactly as the target
    assert set(fleet.live) == set(t.names)
    for name, pool, cfg in zip(t.names, pools, t.configs, strict=True):
        c, _ = fleet.live[name]
        assert (c.tp, c.pp, c.replicas) == (pool.shape.tp, pool.shape.pp, pool.replicas) == (cfg.tp, cfg.pp,
                                                                                              cfg.replicas)
        for cls in pool.classes:
            assert fleet.weights[cls] == {name: 1.0}
    assert fleet.weights == t.weights
    return fleet


def hold_stretches(steps: Sequence[Step]) -> list[list[Step]]:
    """The steps between a Route that holds a class and the Route that releases every held class."""
    out: list[list[Step]] = []
    cur: list[Step] | None = None
    for s in steps:
        if isinstance(s, Route):
            if s.held and cur is None:
                cur = []
                continue
            if not s.held and cur is not None:
                out.append(cur)
                cur = None
                continue
        if cur is not None:
            cur.append(s)
    assert cur is None, "a hold never released"
    return out


# --- an exhaustive search of its own: does any order of steps avoid a hold? -----------------------------------

def hold_free_exists(current: Sequence[ParallelConfig], placement: dict[str, list[list[str]]], pools: Sequence[Pool],
                     nodes: Sequence[Node], scale: bool) -> bool:
    """Breadth-first over every set reachable without ever emptying it: deploy a target shape with any replica
    count (Scale) or its pool's (not), scale any configuration to any count, remove any but the last one."""
    index = {n.node_id: i for i, n in enumerate(nodes)}
    cap = [int(n.gpus) for n in nodes]
    gpn = max(cap)
    shapes = Counter((p.shape.tp, p.shape.pp) for p in pools)
    most = {s: max(p.replicas for p in pools if (p.shape.tp, p.shape.pp) == s) for s in shapes}
    goal = sorted((p.shape.tp, p.shape.pp, p.replicas) for p in pools)

    Cfg = tuple[int, int, tuple[Replica, ...]]

    def layout(tp: int, pp: int) -> Layout:
        return Layout.of(config("x", tp, pp, gpn=gpn))

    def free(state: tuple[Cfg, ...]) -> list[int]:
        f = list(cap)
        for tp, pp, reps in state:
            for r in reps:
                for b, n in zip(layout(tp, pp).bundles, r, strict=True):
                    f[n] -= b
        return f

    def grow(state: tuple[Cfg, ...], tp: int, pp: int, reps: tuple[Replica, ...],
             upto: int) -> list[tuple[Replica, ...]]:
        f = free(state)
        out, cur = [], list(reps)
        lay = layout(tp, pp)
        while len(cur) < upto:
            r = place(f, lay)
            if r is None:
                break
            for b, n in zip(lay.bundles, r, strict=True):
                f[n] -= b
            cur.append(r)
            out.append(tuple(cur))
        return out

    start = tuple(sorted((c.tp, c.pp, tuple(bundle_nodes(layout(c.tp, c.pp), [index[n] for n in r])
                                            for r in placement[c.name])) for c in current))
    seen = {start}
    todo = [start]
    while todo:
        state = todo.pop()
        if sorted((tp, pp, len(reps)) for tp, pp, reps in state) == goal:
            return True
        nxt: list[tuple[Cfg, ...]] = []
        live_new = Counter((tp, pp) for tp, pp, _ in state)
        for s in shapes:
            if live_new[s] >= shapes[s] + sum(1 for c in current if (c.tp, c.pp) == s):
                continue
            counts = range(1, most[s] + 1) if scale else sorted({p.replicas for p in pools
                                                                  if (p.shape.tp, p.shape.pp) == s})
            grown = grow(state, *s, (), most[s])
            nxt += [(*state, (*s, g)) for g in grown if len(g) in counts]
        for i, (tp, pp, reps) in enumerate(state):
            rest = state[:i] + state[i + 1:]
            if len(state) > 1:
                nxt.append(rest)
            if scale:
                for k in range(1, len(reps)):
                    nxt.append((*rest, (tp, pp, stop([r for _, _, r in state], i, len(reps) - k, len(cap)))))
                if (tp, pp) in most:
                    nxt += [(*rest, (tp, pp, g)) for g in grow(state, tp, pp, reps, most[(tp, pp)])]
        for s2 in nxt:
            key = tuple(sorted(s2))
            if key not in seen:
                seen.add(key)
                todo.append(key)
    return False


def test_the_exhaustive_search_finds_hold_free_orders_where_they_exist() -> None:
    one, two = nodes_of(1), nodes_of(2)
    tp1x8, tp8 = config("tp1", 1, replicas=8), config("tp8", 8)
    to_tp2 = [Pool(Shape(2, 1), 4, ("chat",))]
    assert hold_free_exists([tp1x8], {"tp1": [["n0"]] * 8}, to_tp2, one, scale=True)
    assert not hold_free_exists([tp1x8], {"tp1": [["n0"]] * 8}, to_tp2, one, scale=False)
    assert not hold_free_exists([tp8], {"tp8": [["n0"]]}, [Pool(Shape(4, 1), 2, ("chat",))], one, scale=True)
    # two TP4 on different nodes → TP8 + TP4: only by emptying a node first
    fragmented = {"a": [["n0"]], "b": [["n1"]]}
    assert hold_free_exists([config("a", 4), config("b", 4)], fragmented,
                            [Pool(Shape(8, 1), 1, ("chat",)), Pool(Shape(4, 1), 1, ("summarize",))], two, scale=False)


# --- random splits ------------------------------------------------------------------------------------------------

def shapes_for(nodes: int, gpn: int = 8) -> list[Shape]:
    total = nodes * gpn
    return [Shape(tp, pp) for tp in (1, 2, 4, 8) for pp in (1, 2, 4, 8, 16)
            if tp * pp <= total and (tp * pp <= gpn or tp * pp % gpn == 0)]


@st.composite
def split(draw: st.DrawFn, classes: tuple[str, ...], n_nodes: int) -> list[Pool]:
    groups = draw(st.sampled_from(list(class_partitions(list(classes)))))
    left = 8 * n_nodes
    pools = []
    for g in groups:
        options = [s for s in shapes_for(n_nodes) if s.gpus <= left]
        assume(options)
        s = draw(st.sampled_from(options))
        r = draw(st.integers(1, left // s.gpus))
        pools.append(Pool(s, r, tuple(g)))
        left -= s.gpus * r
    try:
        plan_nodes([config(f"p{i}", p.shape.tp, p.shape.pp, p.replicas) for i, p in enumerate(pools)],
                   nodes_of(n_nodes))
    except PlacementError:
        assume(False)
    return pools


@st.composite
def case(draw: st.DrawFn, n_nodes: int) -> tuple[ServingSet, list[Pool], dict[str, list[list[str]]], bool]:
    classes = CLASSES[:draw(st.integers(1, 3))]
    now = draw(split(classes, n_nodes))
    target = draw(split(classes, n_nodes))
    configs = tuple(config(f"c{i}", p.shape.tp, p.shape.pp, p.replicas) for i, p in enumerate(now))
    # the routing now: each class to a non-empty set of the current configurations, any weights
    weights = {cls: {configs[i].name: float(draw(st.integers(1, 3)))
                     for i in draw(st.sets(st.integers(0, len(configs) - 1), min_size=1))} for cls in classes}
    # where Ray put them: replicas one at a time, in a drawn order, each on a drawn node that fits
    placement = draw(random_placement(configs, n_nodes))
    return ServingSet(configs, weights, placement), target, placement, draw(st.booleans())


@st.composite
def random_placement(draw: st.DrawFn, configs: Sequence[ParallelConfig], n_nodes: int) -> dict[str, list[list[str]]]:
    free = [8] * n_nodes
    out: dict[str, list[list[str]]] = {c.name: [] for c in configs}
    for c in draw(st.permutations(list(configs))):
        for _ in range(c.replicas):
            nodes = []
            for b in [c.tp] * c.pp if c.spread_pp_over_nodes else [c.gpus_per_replica]:   # a node per stage
                fits = [i for i, f in enumerate(free) if f >= b]
                assume(fits)
                n = draw(st.sampled_from(fits))
                free[n] -= b
                nodes.append(f"n{n}")
            out[c.name].append(nodes)
    return out


def check(current: ServingSet, target: list[Pool], placement: dict[str, list[list[str]]], scale: bool,
          n_nodes: int) -> Transition:
    nodes = nodes_of(n_nodes)
    t = plan_transition(current, target, nodes, start_s, drain_s=DRAIN_S, scale=scale)
    replay(current, t, target, nodes, placement)
    if t.held:
        assert not hold_free_exists(current.configs, placement, target, nodes, scale), \
            "held, though an order of steps without a hold exists"
        for stretch in hold_stretches(t.steps):
            assert [type(s) for s in stretch] == [Drain, Remove, Deploy], stretch
    return t


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case(n_nodes=1))
def test_every_class_is_served_at_every_step_on_one_node(c: tuple) -> None:
    current, target, placement, scale = c
    t = check(current, target, placement, scale, 1)
    # on one node the rule is exact: a hold is needed iff no current configuration can be the target's
    # (same shape; without Scale, same replicas) and no current and target configuration fit side by side at
    # their smallest (one replica each with Scale, whole without)
    def least(tp: int, pp: int, replicas: int) -> int:
        return tp * pp * (1 if scale else replicas)
    kept = any((c.tp, c.pp) == (p.shape.tp, p.shape.pp) and (scale or c.replicas == p.replicas)
               for c in current.configs for p in target)
    pair = any(least(c.tp, c.pp, c.replicas) + least(p.shape.tp, p.shape.pp, p.replicas) <= 8
               for c in current.configs for p in target)
    assert bool(t.held) == (not kept and not pair)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case(n_nodes=2))
def test_every_class_is_served_at_every_step_on_two_nodes(c: tuple) -> None:
    current, target, placement, scale = c
    check(current, target, placement, scale, 2)


# --- the cases users meet -----------------------------------------------------------------------------------------

def both(name: str) -> dict[str, dict[str, float]]:
    return {"chat": {name: 1.0}, "summarize": {name: 1.0}}


def kinds(t: Transition) -> list[str]:
    return [type(s).__name__ for s in t.steps]


@pytest.mark.parametrize("scale", [True, False])
def test_tp8_to_two_tp4_holds_once_for_a_drain_and_a_start(scale: bool) -> None:
    current = ServingSet((config("tp8", 8),), both("tp8"))
    target = [Pool(Shape(4, 1), 2, ("chat", "summarize"))]
    t = check(current, target, plan_nodes(current.configs, nodes_of(1)), scale, 1)
    assert kinds(t) == ["Route", "Drain", "Remove", "Deploy", "Route"]
    assert t.held == ["chat", "summarize"]
    assert t.cost.held_s == {"chat": DRAIN_S + start_s(config("x", 4)), "summarize": DRAIN_S + start_s(config("x", 4))}


def test_eight_tp1_to_four_tp2_needs_scale_to_avoid_a_hold() -> None:
    current = ServingSet((config("tp1", 1, replicas=8),), both("tp1"))
    target = [Pool(Shape(2, 1), 4, ("chat", "summarize"))]
    placement = plan_nodes(current.configs, nodes_of(1))
    moved = check(current, target, placement, True, 1)
    assert not moved.held
    # the single configuration shrinks first, the new one starts beside it, then takes its place
    assert isinstance(moved.steps[0], Scale) and moved.steps[0].name == "tp1"
    assert isinstance(moved.steps[1], Deploy) and moved.steps[1].config.name == "tp2"
    assert moved.cost.fewest_serving_gpus(8) == 4      # half the node serves throughout, never less
    stuck = check(current, target, placement, False, 1)
    assert stuck.held == ["chat", "summarize"]


def test_two_tp4_to_a_tp4_for_chat_and_two_tp2_for_summarize_keeps_the_tp4() -> None:
    current = ServingSet((config("tp4", 4, replicas=2),), both("tp4"))
    target = [Pool(Shape(4, 1), 1, ("chat",)), Pool(Shape(2, 1), 2, ("summarize",))]
    t = check(current, target, plan_nodes(current.configs, nodes_of(1)), True, 1)
    assert not t.held
    assert t.names == ("tp4", "tp2")            # the common shape stays, scaled; the new one gets a new name
    assert kinds(t) == ["Scale", "Deploy", "Route"]
    assert t.weights == {"chat": {"tp4": 1.0}, "summarize": {"tp2": 1.0}}


def test_two_nodes_tp8pp2_gives_way_to_two_tp8() -> None:
    current = ServingSet((config("tp8pp2", 8, 2),), {"chat": {"tp8pp2": 1.0}})
    target = [Pool(Shape(8, 1), 2, ("chat",))]
    t = check(current, target, plan_nodes(current.configs, nodes_of(2)), True, 2)
    assert kinds(t) == ["Route", "Drain", "Remove", "Deploy", "Route"]
    deploy = t.steps[3]
    assert isinstance(deploy, Deploy) and sorted(deploy.nodes) == [("n0",), ("n1",)]


def test_fragmented_nodes_empty_one_before_a_whole_node_replica() -> None:
    """A TP4 on each node leaves 4 + 4 GPUs free: the total fits a TP8 but no node does. The plan empties a
    node first (chat borrows summarize's TP4), where a check of the whole set would start the TP8 and hang."""
    current = ServingSet((config("chat4", 4), config("sum4", 4)), {"chat": {"chat4": 1.0}, "summarize": {"sum4": 1.0}},
                         placement={"chat4": [["n0"]], "sum4": [["n1"]]})
    target = [Pool(Shape(8, 1), 1, ("chat",)), Pool(Shape(4, 1), 1, ("summarize",))]
    plan_nodes([config("a", 8), config("b", 4), config("c", 4)], nodes_of(2))   # the whole-set check passes
    t = check(current, target, {"chat4": [["n0"]], "sum4": [["n1"]]}, True, 2)
    assert not t.held
    assert [s.line.split(":")[0] for s in t.steps if not isinstance(s, Route)] == [
        "drain chat4", "remove chat4", "deploy tp8 (1×TP8)"]
    assert t.names == ("tp8", "sum4")


def test_no_change_is_no_step() -> None:
    current = ServingSet((config("tp4", 4, replicas=2),), both("tp4"))
    t = plan_transition(current, [Pool(Shape(4, 1), 2, ("chat", "summarize"))], nodes_of(1), start_s, drain_s=5)
    assert t.steps == () and t.cost.duration_s == 0 and t.names == ("tp4",)


def test_replanning_in_the_middle_of_a_hold_releases_it_with_the_first_start() -> None:
    """A rollback after a failed start: nothing is live and both classes are held; the way back is one deploy
    and the Route that releases them, under a name the run has not used."""
    current = ServingSet((), {"chat": {}, "summarize": {}})
    t = plan_transition(current, [Pool(Shape(8, 1), 1, ("chat", "summarize"))], nodes_of(1), start_s, drain_s=5,
                        used_names={"tp8"})
    assert kinds(t) == ["Deploy", "Route"] and t.names == ("tp8-2",)
    assert t.cost.held_s == {"chat": start_s(config("x", 8)), "summarize": start_s(config("x", 8))}
    replay(current, t, [Pool(Shape(8, 1), 1, ("chat", "summarize"))], nodes_of(1), {})


def test_a_new_class_is_routed_at_once_to_what_is_live() -> None:
    """A tenant's class that has no row yet borrows the live configuration from the first step, not after a
    start."""
    current = ServingSet((config("tp4", 4),), {"chat": {"tp4": 1.0}})
    target = [Pool(Shape(4, 1), 1, ("chat",)), Pool(Shape(2, 1), 2, ("batch",))]
    t = check(current, target, plan_nodes(current.configs, nodes_of(1)), True, 1)
    first = t.steps[0]
    assert isinstance(first, Route) and first.weights["batch"] == {"tp4": 1.0}
    assert t.cost.held_s["batch"] == 0 and kinds(t) == ["Route", "Deploy", "Route"]


def test_new_names_never_reuse_one_of_the_run() -> None:
    current = ServingSet((config("tp8", 8),), both("tp8"))
    t = plan_transition(current, [Pool(Shape(4, 1), 2, ("chat", "summarize"))], nodes_of(1), start_s, drain_s=5,
                        used_names={"tp4", "tp4-2"})
    assert t.names == ("tp4-3",)


def test_make_before_break_cost_counts_what_does_not_serve() -> None:
    """TP4 on 8 GPUs → 2×TP2: the TP2s start on the 4 free GPUs while the TP4 serves (4 GPUs idle for the
    start), then the TP4 drains while the TP2s serve (4 GPUs idle for the drain)."""
    current = ServingSet((config("tp4", 4),), both("tp4"))
    t = check(current, [Pool(Shape(2, 1), 2, ("chat", "summarize"))], plan_nodes(current.configs, nodes_of(1)),
              True, 1)
    assert kinds(t) == ["Deploy", "Route", "Drain", "Remove"]
    start = start_s(config("x", 2))
    assert t.cost.duration_s == start + DRAIN_S
    assert t.cost.lost_gpu_s == 4 * start + 4 * DRAIN_S
    assert t.cost.held_class_s == 0


def test_bad_input_is_one_line_naming_the_fix() -> None:
    current = ServingSet((config("tp8", 8),), both("tp8"))
    with pytest.raises(TransitionError, match="does not fit the nodes"):
        plan_transition(current, [Pool(Shape(4, 1), 3, ("chat", "summarize"))], nodes_of(1), start_s, drain_s=5)
    with pytest.raises(TransitionError, match="no target pool serves"):
        plan_transition(current, [Pool(Shape(4, 1), 2, ("chat",))], nodes_of(1), start_s, drain_s=5)
    with pytest.raises(TransitionError, match="in two target pools"):
        plan_transition(current, [Pool(Shape(4, 1), 1, ("chat",)), Pool(Shape(4, 1), 1, ("chat", "summarize"))],
                        nodes_of(1), start_s, drain_s=5)
    with pytest.raises(TransitionError, match="names node"):
        plan_transition(ServingSet(current.configs, current.weights, {"tp8": [["elsewhere"]]}),
                        [Pool(Shape(4, 1), 2, ("chat", "summarize"))], nodes_of(1), start_s, drain_s=5)
    with pytest.raises(TransitionError, match="current set does not fit"):
        plan_transition(ServingSet((config("tp8", 8, replicas=2),), both("tp8")),
                        [Pool(Shape(4, 1), 2, ("chat", "summarize"))], nodes_of(1), start_s, drain_s=5)


# --- the model of Ray's choices -------------------------------------------------------------------------------

def test_ray_places_a_replica_on_the_freest_node() -> None:
    assert place([4, 8], Layout.of(config("x", 4))) == (1,) * 4      # one bundle per GPU, all on one node
    assert place([4, 2], Layout.of(config("x", 8))) is None
    assert place([8, 8], Layout.of(config("x", 8, 2))) == (0,) * 8 + (1,) * 8    # a stage per node
    # a spread replica's one-GPU bundles fill the freest node, then go to the next freest
    assert place([8, 8], Layout.of(config("x", 4, 4))) == (0,) * 8 + (1,) * 8
    assert place([8, 8], Layout.of(config("x", 2, 8))) == (0,) * 8 + (1,) * 8
    spread = ParallelConfig(name="x", tp=4, pp=2, spread_pp_over_nodes=True)
    assert place([4, 8], Layout.of(spread)) == (1,) * 8                 # all on the freest node
    assert place([6, 4], Layout.of(spread)) is None    # 6 on node 0 would split the second TP group: vLLM refuses
    assert place([6, 8], Layout.of(config("x", 4, 4))) is None


def test_serve_stops_replicas_on_the_emptiest_node_first_newest_first() -> None:
    # config 0 has replicas on n0 (twice) and n1; config 1 fills n0 further: n1 holds fewest replicas
    reps: list[tuple[Replica, ...]] = [((0,), (0,), (1,)), ((0,),)]
    assert stop(reps, 0, 1, 2) == ((0,), (0,))
    assert stop(reps, 0, 2, 2) == ((0,),)
