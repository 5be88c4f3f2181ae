"""The deployments a GPU budget allows: pools of TP×PP replicas, one pool for all classes or one per class group.

A shape is TP×PP GPUs per replica; TP stays inside a node and divides the attention heads (the same
`check_parallelism` vLLM's rules give `parallax validate`), PP crosses nodes only where the scenario allows
it (`spread_pp_over_nodes`), and the memory plan must leave room for a KV cache. A pool is R replicas of
one shape serving a set of SLA classes; a deployment is one pool for every class (homogeneous) or several
pools, each class routed wholly to one of them (heterogeneous). Every deployment must pack onto the
budget's nodes (`plan_nodes`, the check `parallax up` makes before deploying).
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product

from deployments.catalog.gpus import GpuSpec
from deployments.catalog.memory import check_parallelism, plan_engine_memory
from deployments.catalog.models import ModelSpec
from deployments.placement import Node, PlacementError, plan_nodes
from schema.deployment import Disaggregation, EngineConfig, ParallelConfig, RoleConfig, shape_label
from schema.dtypes import Dtype


@dataclass(frozen=True, order=True)
class Shape:
    """GPUs of one replica: `tp` tensor-parallel ranks × `pp` pipeline stages."""

    tp: int
    pp: int

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def label(self) -> str:
        return shape_label(self.tp, self.pp)


@dataclass(frozen=True, order=True)
class Knobs:
    """The engine options a plan may vary (the scenario's own values unless the user opts in)."""

    kv_dtype: Dtype
    max_num_seqs: int
    max_num_batched_tokens: int

    def engine(self, base: EngineConfig) -> EngineConfig:
        """The scenario's engine with these options; every other option flows through unchanged."""
        return base.model_copy(update={"max_num_seqs": self.max_num_seqs,
                                       "max_num_batched_tokens": self.max_num_batched_tokens})


@dataclass(frozen=True, order=True)
class Prefill:
    """The prefill role of a disaggregated pool: `replicas` copies of `shape`."""

    shape: Shape
    replicas: int

    @property
    def gpus(self) -> int:
        return self.shape.gpus * self.replicas


@dataclass(frozen=True, order=True)
class Pool:
    """`replicas` copies of one shape serving `classes` (in scenario order); with `prefill`, disaggregated:
    those replicas only decode, and `prefill`'s replicas compute every prompt and hand its KV cache over."""

    shape: Shape
    replicas: int
    classes: tuple[str, ...]
    prefill: Prefill | None = None

    @property
    def gpus(self) -> int:
        return self.shape.gpus * self.replicas + (self.prefill.gpus if self.prefill else 0)

    @property
    def label(self) -> str:
        """`4×TP2`, or `3P(TP2)+1D(TP2)` when disaggregated."""
        if self.prefill is None:
            return f"{self.replicas}×{self.shape.label}"
        return f"{self.prefill.replicas}P({self.prefill.shape.label})+{self.replicas}D({self.shape.label})"

    @property
    def tps(self) -> list[int]:
        """The TP of each replica, in the simulator's order (prefill replicas first)."""
        first = [self.prefill.shape.tp] * self.prefill.replicas if self.prefill else []
        return first + [self.shape.tp] * self.replicas

    def config(self, name: str, gpus_per_node: int, spread_pp: bool) -> ParallelConfig:
        """The pool as a scenario's configuration (`disagg:` when disaggregated); pipelines spread over nodes
        where a replica is larger than a node and `spread_pp` allows it."""
        spread = spread_pp and max(self.shape.gpus, self.prefill.shape.gpus if self.prefill else 0) > gpus_per_node
        if self.prefill is None:
            return ParallelConfig(name=name, tp=self.shape.tp, pp=self.shape.pp, replicas=self.replicas,
                                  spread_pp_over_nodes=spread)
        roles = Disaggregation(
            prefill=RoleConfig(tp=self.prefill.shape.tp, pp=self.prefill.shape.pp, replicas=self.prefill.replicas),
            decode=RoleConfig(tp=self.shape.tp, pp=self.shape.pp, replicas=self.replicas))
        return ParallelConfig(name=name, disagg=roles, spread_pp_over_nodes=spread)


@dataclass(frozen=True)
class Candidate:
    """One deployment of (part of) the budget: its pools and engine options."""

    pools: tuple[Pool, ...]
    knobs: Knobs

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.pools)

    @property
    def homogeneous(self) -> bool:
        return len(self.pools) == 1

    @property
    def disaggregated(self) -> bool:
        return any(p.prefill is not None for p in self.pools)

    @property
    def kind(self) -> str:
        return "disaggregated" if self.disaggregated else "aggregated"

    def label(self, all_classes: int) -> str:
        """`2×TP4`, or `1×TP4 [chat] + 2×TP2 [summarize]` when the classes are split over pools."""
        if self.homogeneous and len(self.pools[0].classes) == all_classes:
            return self.pools[0].label
        return " + ".join(f"{p.label} [{', '.join(p.classes)}]" for p in self.pools)


@dataclass(frozen=True)
class Budget:
    """The GPUs to plan: whole nodes of `gpus_per_node`, the last one possibly partial."""

    gpus: int
    gpus_per_node: int

    @property
    def nodes(self) -> list[int]:
        full, rest = divmod(self.gpus, self.gpus_per_node)
        return [self.gpus_per_node] * full + ([rest] if rest else [])


def shapes(model: ModelSpec, gpu: GpuSpec, dtype: Dtype, engine: EngineConfig, knobs: Knobs, budget: Budget,
           spread_pp: bool) -> list[Shape]:
    """Every TP×PP shape of at most `budget.gpus` GPUs that vLLM accepts and whose memory plan leaves a KV cache.

    Inside a node any PP depth is allowed; across nodes only pipelines that fill whole nodes (with
    `spread_pp`), so that no node is left with a stranded remainder.
    """
    out = []
    gpn = budget.gpus_per_node
    for tp in range(1, gpn + 1):
        for pp in range(1, budget.gpus // tp + 1):
            g = tp * pp
            if g > gpn and not (spread_pp and g % gpn == 0):
                continue
            if runs(model, gpu, dtype, engine, knobs, Shape(tp, pp)):
                out.append(Shape(tp, pp))
    return out


def runs(model: ModelSpec, gpu: GpuSpec, dtype: Dtype, engine: EngineConfig, knobs: Knobs, shape: Shape) -> bool:
    """Whether vLLM accepts the split (`check_parallelism`) and one replica leaves room for a KV cache."""
    try:
        check_parallelism(model, shape.tp, shape.pp)
    except ValueError:
        return False
    return fits(model, gpu, dtype, engine, knobs, shape)


def fits(model: ModelSpec, gpu: GpuSpec, dtype: Dtype, engine: EngineConfig, knobs: Knobs, shape: Shape) -> bool:
    """Whether one replica of `shape` holds the weights and leaves room for KV cache (`parallax validate`'s plan)."""
    return plan_engine_memory(knobs.engine(engine), model, gpu, dtype, knobs.kv_dtype, shape.tp, shape.pp).fits


def smallest_fitting(model: ModelSpec, gpu: GpuSpec, dtype: Dtype, engine: EngineConfig, knobs: Knobs,
                     gpus_per_node: int, max_gpus: int = 1024) -> Shape | None:
    """The shape of fewest GPUs that holds one copy of the model (PP over whole nodes allowed), if any."""
    for g in range(1, max_gpus + 1):
        for tp in range(min(g, gpus_per_node), 0, -1):
            if g % tp:
                continue
            if g > gpus_per_node and g % gpus_per_node:
                continue
            if runs(model, gpu, dtype, engine, knobs, Shape(tp, g // tp)):
                return Shape(tp, g // tp)
    return None


def packs(pools: Sequence[Pool], budget: Budget, spread_pp: bool) -> bool:
    """Whether every replica of `pools` finds GPUs on the budget's nodes (first-fit decreasing)."""
    if sum(p.gpus for p in pools) > budget.gpus:
        return False
    if len(budget.nodes) == 1:   # one node: every shape here fits it, so the total decides
        return True
    configs = [p.config(f"p{i}", budget.gpus_per_node, spread_pp) for i, p in enumerate(pools)]
    try:
        plan_nodes(configs, [Node(str(i), float(g)) for i, g in enumerate(budget.nodes)])
    except PlacementError:
        return False
    return True


def class_partitions(classes: Sequence[str]) -> Iterator[tuple[tuple[str, ...], ...]]:
    """Every way to split the classes into non-empty groups (set partitions), groups in scenario order."""
    if not classes:
        yield ()
        return
    first, rest = classes[0], classes[1:]
    for part in class_partitions(rest):
        yield ((first,), *part)
        for i in range(len(part)):
            yield (*part[:i], (first, *part[i]), *part[i + 1:])


def candidates(shape_list: Sequence[Shape], classes: Sequence[str], knobs: Knobs, budget: Budget,
               spread_pp: bool, heterogeneous: bool = True) -> list[Candidate]:
    """Every deployment of at most `budget.gpus` GPUs: one pool of R replicas of a shape for all classes, and
    (with `heterogeneous`) every split of the classes into groups, each group on a pool of its own."""
    options = [(s, r) for s in sorted(shape_list) for r in range(1, budget.gpus // s.gpus + 1)]
    out = []
    all_classes = tuple(classes)
    for s, r in options:
        single = (Pool(s, r, all_classes),)
        if packs(single, budget, spread_pp):
            out.append(Candidate(single, knobs))
    if not heterogeneous:
        return out
    for groups in class_partitions(list(classes)):
        if len(groups) < 2:
            continue
        groups = tuple(tuple(c for c in classes if c in g) for g in groups)
        for choice in product(options, repeat=len(groups)):
            if sum(s.gpus * r for s, r in choice) > budget.gpus:
                continue
            pools = tuple(Pool(s, r, g) for (s, r), g in zip(choice, groups, strict=True))
            if packs(pools, budget, spread_pp):
                out.append(Candidate(pools, knobs))
    return out
