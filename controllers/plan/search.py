"""The search: every candidate deployment screened on cached pool capacities, the front-runners refined with
more requests and several seeds, then ranked by the objective.

With each class routed wholly to one pool, a pool's load is its classes' share of the total rate, so a
deployment's highest total rate is the minimum over its pools of (pool capacity ÷ its classes' share).
Pool capacities depend only on (shape, replicas, class group, engine options): each is computed once and
shared by every deployment that holds that pool.
"""

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from controllers.plan.availability import Availability, PoolUp, expected_share
from controllers.plan.candidates import (
    Budget,
    Candidate,
    Knobs,
    Pool,
    Shape,
    candidates,
    shapes,
    smallest_fitting,
)
from controllers.plan.disagg import Enumeration, Simulated, enumerate_disaggregated, simulate
from controllers.plan.estimate import Estimate, Lengths, estimate, lengths
from controllers.plan.evaluate import (
    COARSE,
    REFINE,
    SCREEN,
    Capacity,
    Fidelity,
    Miss,
    PlanError,
    RunFigures,
    Saturation,
    Setup,
    capacity,
    requests_for,
    run_at,
    saturation,
)
from controllers.plan.parallel import Runner
from deployments.resolve import Resolved
from schema.dtypes import Dtype

Objective = Literal["max-rate", "goodput-per-gpu", "min-gpus"]
OBJECTIVES: tuple[Objective, ...] = ("max-rate", "goodput-per-gpu", "min-gpus")
PROMISING_PER_POOL = 4          # candidates screened (after the coarse stage) per pool to refine
FIGURED = 8                     # refined deployments (besides the best homogeneous one) simulated at their max rate


@dataclass(frozen=True)
class PlanOptions:
    gpus: int | None = None                           # default: the whole hardware
    objective: Objective = "max-rate"
    top: int = 5
    kv_dtypes: tuple[Dtype, ...] = ()                 # default: the scenario's own
    max_num_seqs: tuple[int, ...] = ()
    max_num_batched_tokens: tuple[int, ...] = ()
    heterogeneous: bool = True
    disaggregated: bool = True                        # also search prefill/decode disaggregation
    spread_pp: bool | None = None                     # default: as the scenario's configurations allow
    seeds: int = 3
    refine_pools: int = 12                            # distinct pools of the front-runners refined over seeds
    availability: Availability | None = None          # rank by expected capacity when GPUs fail (None: they don't)
    exhaustive: bool = False                          # simulate every candidate (no screen by the estimate)


@dataclass(frozen=True)
class PoolKey:
    """What a pool's capacity depends on besides its replica count."""

    shape: Shape
    classes: tuple[str, ...]
    knobs: Knobs


@dataclass(frozen=True)
class PoolsTask:
    """Capacities of one shape × class group at several replica counts, at one fidelity and seed."""

    setup: Setup
    key: PoolKey
    replicas: tuple[int, ...]
    fidelity: Fidelity
    seed: int
    guesses: tuple[float, ...] = ()        # per replica count, from a cheaper stage (0: none)
    saturation: Saturation | None = None


def pool_capacities(task: PoolsTask) -> list[Capacity]:
    """Each replica count's search starts from a guess: the cheaper stage's answer, else the previous count's
    capacity scaled by the replicas. One saturation run serves them all."""
    k = task.key
    sat = task.saturation or saturation(task.setup, Pool(k.shape, 1, k.classes), k.knobs, task.seed)
    out: list[Capacity] = []
    for i, r in enumerate(task.replicas):
        guess = task.guesses[i] if task.guesses else 0.0
        if not guess and out and out[-1].rate > 0:
            guess = out[-1].rate * r / task.replicas[i - 1]
        out.append(capacity(task.setup, Pool(k.shape, r, k.classes), k.knobs, task.fidelity, task.seed,
                            guess or None, sat))
    return out


@dataclass(frozen=True)
class FiguresTask:
    setup: Setup
    pool: Pool
    knobs: Knobs
    rate: float
    fidelity: Fidelity
    horizon_s: float
    seed: int


def pool_figures(task: FiguresTask) -> RunFigures:
    fid = task.fidelity
    n = requests_for(task.rate, task.horizon_s, fid, task.setup.to_judge(task.pool.classes, fid.misses))
    return run_at(task.setup, task.pool, task.knobs, task.rate, n, task.seed, fid.warmup)


@dataclass(frozen=True)
class FailureDomain:
    """Replicas of one shape in one pool (one role of a disaggregated pool): any GPU of a replica failing takes
    that replica down."""

    pool: Pool
    role: str            # "", or "decode" / "prefill" in a disaggregated pool
    shape: Shape
    replicas: int


def failure_domains(p: Pool) -> list[FailureDomain]:
    """A pool's failure domains: itself, or a disaggregated pool's decode role then its prefill role."""
    if p.prefill is None:
        return [FailureDomain(p, "", p.shape, p.replicas)]
    return [FailureDomain(p, "decode", p.shape, p.replicas),
            FailureDomain(p, "prefill", p.prefill.shape, p.prefill.replicas)]


@dataclass
class Evaluated:
    """One candidate with what the search learned about it."""

    candidate: Candidate
    shares: list[float]                              # per pool: its classes' share of all requests
    max_rate: float                                  # requests/s of the whole traffic, engine clock
    capacities: list[Capacity]                       # per pool (screening, or the first seed once refined)
    seed_rates: list[float] = field(default_factory=list)     # max_rate per seed (refined candidates)
    figures: list[RunFigures] = field(default_factory=list)   # per pool at max_rate (refined candidates)
    goodput_at: dict[float, float] = field(default_factory=dict)   # scenario rate -> goodput per GPU
    availability: Availability | None = None
    estimated: float = 0.0                           # max_rate by the steady-state estimate
    lower: float = 0.0                               # the lowest max_rate its error bar allows
    upper: float = math.inf                          # the highest

    @property
    def pools_up(self) -> list[PoolUp]:
        """Its pools as the availability model sees them, in pool order; a disaggregated pool as its decode
        replicas then its prefill replicas, each role carrying the pool's rate (rate-matched roles both bind: with
        u of r replicas of either role up, the pool carries about u/r of its capacity)."""
        return [PoolUp(d.replicas, d.shape.gpus, c.rate / sh)
                for p, c, sh in zip(self.candidate.pools, self.capacities, self.shares, strict=True)
                for d in failure_domains(p)]

    @property
    def failure_domains(self) -> list["FailureDomain"]:
        """Its replica groups that fail alike, in `pools_up`'s order."""
        return [d for p in self.candidate.pools for d in failure_domains(p)]

    @property
    def available_share(self) -> float:
        """Expected capacity ÷ capacity with every replica up (controllers/plan/availability.py); 1 without
        failures."""
        return 1.0 if self.availability is None else expected_share(self.pools_up, self.availability)

    @property
    def expected_rate(self) -> float:
        """max_rate over the states of its replicas when GPUs fail: what the ranking compares."""
        return self.max_rate * self.available_share

    @property
    def refined(self) -> bool:
        return bool(self.seed_rates)

    @property
    def max_rate_std(self) -> float:
        return float(np.std(self.seed_rates, ddof=1)) if len(self.seed_rates) > 1 else 0.0

    @property
    def binding_pool(self) -> int:
        """The pool that limits the deployment (lowest capacity for its share of the traffic)."""
        return min(range(len(self.capacities)), key=lambda i: self.capacities[i].rate / self.shares[i])

    @property
    def goodput(self) -> float:
        return sum(f.goodput for f in self.figures) if self.figures else self.max_rate

    @property
    def goodput_per_gpu(self) -> float:
        return self.goodput / self.candidate.gpus

    @property
    def output_tokens_per_s_per_gpu(self) -> float:
        return sum(f.output_tokens_per_s for f in self.figures) / self.candidate.gpus

    @property
    def misses(self) -> tuple[Miss, ...]:
        return tuple(m for c in self.capacities for m in c.misses)


@dataclass
class Plan:
    """The ranked outcome of a search and how it was obtained."""

    scenario: str
    setup: Setup                      # what every simulation of the search shared
    objective: Objective
    budget: Budget
    ranked: list[Evaluated]           # refined candidates, best first
    screened: list[Evaluated]         # every candidate simulated (screening figures), best first
    required_rate: float              # the scenario's highest rate (engine clock): min-gpus must reach it
    scenario_rates: list[float]       # engine clock
    pool_evaluations: int
    simulations: int
    seconds: float
    where: str
    seeds: int
    notes: list[str] = field(default_factory=list)
    screened_out: list[Evaluated] = field(default_factory=list)   # dropped by the estimate, never simulated

    @property
    def candidates(self) -> int:
        return len(self.screened) + len(self.screened_out)


def _knobs(resolved: Resolved, opts: PlanOptions) -> list[Knobs]:
    s = resolved.scenario
    return [Knobs(kv, seqs, mnbt) for kv, seqs, mnbt in itertools.product(
        opts.kv_dtypes or (s.resolved_kv_dtype,), opts.max_num_seqs or (s.engine.max_num_seqs,),
        opts.max_num_batched_tokens or (s.engine.max_num_batched_tokens,))]


def engine_clock_rates(resolved: Resolved) -> list[float]:
    """The scenario's offered rates (its sweep, else its arrival's rate) on the engine's clock."""
    s = resolved.scenario
    rates = list(s.load.rates) or [float(getattr(s.load.arrival, "rate", 0.0))]
    scale = s.engine.clock_scale
    return [r * scale for r in rates if r > 0]


def budget_of(resolved: Resolved, gpus: int | None) -> Budget:
    hw = resolved.scenario.hardware
    if gpus is not None and not 0 < gpus <= hw.total_gpus:
        raise PlanError(f"--gpus {gpus}: the hardware has {hw.total_gpus} GPUs ({hw.nodes} node(s) × "
                        f"{hw.gpus_per_node}); give 1 to {hw.total_gpus}")
    return Budget(gpus or hw.total_gpus, hw.gpus_per_node)


def score(e: Evaluated, objective: Objective, required: float) -> tuple[float, ...]:
    """Sort key, smaller is better; by the expected figures when GPUs fail (the same without failures)."""
    rate = e.expected_rate
    if objective == "max-rate":
        return (-rate, e.candidate.gpus)
    if objective == "goodput-per-gpu":
        return (-e.goodput_per_gpu * e.available_share, -rate)
    return (rate < required, e.candidate.gpus if rate >= required else 0, -rate)


Table = dict[tuple[PoolKey, int], Capacity]


def _capacities(runner: Runner, setup: Setup, wanted: dict[PoolKey, set[int]], fid: Fidelity, seed: int,
                prior: Table | None = None) -> Table:
    """Capacities of every wanted pool at one fidelity; `prior` (a cheaper stage) gives guesses and the
    saturation runs."""
    tasks = []
    for key, reps in wanted.items():
        rs = tuple(sorted(reps))
        guesses: tuple[float, ...] = ()
        sat = None
        if prior is not None:
            guesses = tuple(prior[(key, r)].rate for r in rs)
            first = prior[(key, rs[0])]
            sat = Saturation(first.saturation / rs[0]) if first.saturation else None
        tasks.append(PoolsTask(setup, key, rs, fid, seed, guesses, sat))
    tasks.sort(key=lambda t: -len(t.replicas))     # the longest first, so the workers stay busy to the end
    out: Table = {}
    for t, caps in zip(tasks, runner.map(pool_capacities, tasks), strict=True):
        out.update({(t.key, r): c for r, c in zip(t.replicas, caps, strict=True)})
    return out


def _pools_of(evaluated: Sequence["Evaluated"]) -> dict[PoolKey, set[int]]:
    out: dict[PoolKey, set[int]] = {}
    for e in evaluated:
        for p in e.candidate.pools:
            out.setdefault(PoolKey(p.shape, p.classes, e.candidate.knobs), set()).add(p.replicas)
    return out


def _rank(evaluated: list["Evaluated"], table: Table, objective: Objective, required: float) -> list["Evaluated"]:
    """Candidates re-scored with `table`'s capacities, best first."""
    for e in evaluated:
        c = e.candidate
        e.capacities = [table[(PoolKey(p.shape, p.classes, c.knobs), p.replicas)] for p in c.pools]
        e.max_rate = _deployment_rate(e.capacities, e.shares)
    return sorted(evaluated, key=lambda e: score(e, objective, required))


def _front_runners(ranked: Sequence["Evaluated"], pools: int) -> list["Evaluated"]:
    """The best candidates, in order, while their pools number at most `pools` (refining costs per pool, and
    candidates that share a limiting pool share its refinement); of twins (the same rate from the same
    limiting pool) only the one with fewest GPUs."""
    out: list[Evaluated] = []
    seen: set[tuple[Pool, Knobs]] = set()
    for e in ranked:
        if e.max_rate <= 0:
            break
        if any(o.candidate.gpus <= e.candidate.gpus and o.max_rate == e.max_rate for o in out):
            continue   # the same limiting pool with more GPUs elsewhere: nothing to learn
        mine = {(p, e.candidate.knobs) for p in e.candidate.pools}
        if len(seen | mine) <= pools or not out:
            out.append(e)
            seen |= mine
    return out


def _with_homogeneous(chosen: list["Evaluated"], ranked: Sequence["Evaluated"]) -> list["Evaluated"]:
    """`chosen`, the best homogeneous aggregated deployment of `ranked` (the reference a split has to beat) and
    the best disaggregated one (the reference of the other kind)."""
    out = list(chosen)
    for best in (next((e for e in ranked if e.candidate.homogeneous and not e.candidate.disaggregated), None),
                 next((e for e in ranked if e.candidate.disaggregated), None)):
        if best is not None and all(e is not best for e in out):
            out.append(best)
    return out


def _undominated(ranked: Sequence["Evaluated"]) -> list["Evaluated"]:
    """Without the deployments another one matches with fewer GPUs (as high a rate), or with as many GPUs and
    the same rate (they differ only in a pool that does not limit them): never the better answer."""
    out: list[Evaluated] = []
    for e in ranked:
        g, r = e.candidate.gpus, e.max_rate
        fewer = any(o.candidate.gpus < g and o.max_rate >= r for o in ranked)
        twin = any(o.candidate.gpus == g and o.max_rate == r for o in out)
        if not (fewer or twin):
            out.append(e)
    return out


def pool_estimates(setup: Setup, keys: Iterable[PoolKey], seed: int) -> dict[PoolKey, Estimate]:
    """The steady-state estimate of one replica of each pool (a pool of R replicas serves R times its rate)."""
    groups: dict[tuple[str, ...], list[Lengths]] = {}
    out = {}
    for k in keys:
        if k.classes not in groups:
            groups[k.classes] = lengths(setup, k.classes, seed)
        out[k] = estimate(setup, Pool(k.shape, 1, k.classes), k.knobs, groups[k.classes])
    return out


def estimate_deployment(e: "Evaluated", table: Mapping[PoolKey, Estimate]) -> None:
    """A deployment's max_rate by its pools' estimates, and its error bar: the lowest over its pools of
    (capacity ÷ its classes' share), at the estimate and at either end of the bar."""
    c = e.candidate
    pools = [(table[PoolKey(p.shape, p.classes, c.knobs)], p.replicas / sh) for p, sh in zip(c.pools, e.shares,
                                                                                            strict=True)]
    e.estimated = min(est.rate * k for est, k in pools)
    e.lower = min(est.lower * k for est, k in pools)
    e.upper = min(est.upper * k for est, k in pools)


def screen(evaluated: Sequence["Evaluated"], objective: Objective, required: float
           ) -> tuple[list["Evaluated"], list["Evaluated"]]:
    """(kept, dropped): a candidate is dropped when even the top of its estimate's error bar cannot reach what
    the bottom of another's guarantees (by the objective), both among every candidate and among the
    homogeneous ones (the reference a split is shown against)."""
    def kept(group: Sequence[Evaluated]) -> set[int]:
        if not group:
            return set()
        per_gpu = objective == "goodput-per-gpu"

        def of(e: Evaluated, rate: float) -> float:
            return rate / e.candidate.gpus if per_gpu else rate
        floor = max(of(e, e.lower) for e in group)
        out = {id(e) for e in group if of(e, e.upper) >= floor}
        if objective == "min-gpus":    # the fewest GPUs that surely reach the rate, and any fewer that may
            fewest = min((e.candidate.gpus for e in group if e.lower >= required), default=math.inf)
            out |= {id(e) for e in group if e.upper >= required and e.candidate.gpus <= fewest}
        return out
    keep = kept(evaluated) | kept([e for e in evaluated if e.candidate.homogeneous])
    return [e for e in evaluated if id(e) in keep], [e for e in evaluated if id(e) not in keep]


def search(resolved: Resolved, opts: PlanOptions, runner: Runner,
           progress: Callable[[str], None] = lambda _: None) -> Plan:
    """Enumerate, screen, refine and rank every deployment of the budget; PlanError when nothing fits.

    Three stages of rising fidelity: every pool coarsely, the pools of the promising candidates with more
    requests and a finer bracket, the front-runners' pools with more requests again and several seeds.
    """
    t0 = time.perf_counter()
    s = resolved.scenario
    spread = opts.spread_pp if opts.spread_pp is not None else any(c.spread_pp_over_nodes for c in s.configurations)
    setup = Setup.of(resolved, spread)
    budget = budget_of(resolved, opts.gpus)
    names = [c.name for c in s.classes]
    cands: list[Candidate] = []
    for knobs in _knobs(resolved, opts):
        shape_list = shapes(resolved.model, resolved.gpu, s.dtype, s.engine, knobs, budget, spread)
        cands += candidates(shape_list, names, knobs, budget, spread, opts.heterogeneous)
    if not cands:
        raise PlanError(_nothing_fits(resolved, opts, budget))
    required = max(engine_clock_rates(resolved), default=0.0)
    seed = s.engine.seed
    seeds = [seed + i for i in range(opts.seeds)]
    split = (enumerate_disaggregated(setup, _knobs(resolved, opts), budget, opts.objective, required)
             if opts.disaggregated else Enumeration([], []))
    every = [Evaluated(c, [setup.share(p.classes) for p in c.pools], 0.0, [], availability=opts.availability)
             for c in cands]
    one_node = (f" (a budget of {len(budget.nodes)} nodes; `--gpus {budget.gpus_per_node}` plans one)"
                if opts.gpus is None and budget.gpus > budget.gpus_per_node else "")
    estimates = pool_estimates(setup, _pools_of(every), seed)
    for e in every:
        estimate_deployment(e, estimates)
    every, dropped = (every, []) if opts.exhaustive else screen(every, opts.objective, required)
    wanted = _pools_of(every)
    progress(f"{len(cands):,} candidate deployments of up to {budget.gpus} GPUs{one_node}; "
             + ("" if opts.exhaustive else f"{len(dropped):,} screened out by the steady-state estimate; ")
             + f"coarse capacities of {sum(map(len, wanted.values()))} pools")
    coarse = _capacities(runner, setup, wanted, COARSE, seed)
    ranked = _rank(every, coarse, opts.objective, required)
    contenders = split.contenders()
    progress(f"{len(split.screened)} disaggregated candidates (rate-matched roles) estimated; simulating the best "
             f"{len(contenders)}")
    disagg = simulate(runner, setup, contenders, seeds, opts.objective, required) if contenders else []
    if ranked[0].max_rate <= 0 and not any(d.rate > 0 for d in disagg):
        raise PlanError(_nothing_meets(ranked, len(names)) + "".join(f"; {r}" for r in split.rejected))
    promising = _with_homogeneous(ranked[:PROMISING_PER_POOL * max(opts.refine_pools, opts.top)], ranked)
    wanted = _pools_of(promising)
    progress(f"screening the {len(promising)} most promising: {sum(map(len, wanted.values()))} pools")
    screened = _capacities(runner, setup, wanted, SCREEN, seed, coarse)
    promising = _rank(promising, screened, opts.objective, required)
    finalists = _with_homogeneous(_front_runners(promising, max(opts.refine_pools, opts.top)), promising)

    wanted = _pools_of(finalists)
    progress(f"refining {len(finalists)} front-runners: {sum(map(len, wanted.values()))} pools × {len(seeds)} seeds")
    per_seed = [_capacities(runner, setup, wanted, REFINE, sd, screened) for sd in seeds]
    for e in finalists:
        c = e.candidate
        caps = [[t[(PoolKey(p.shape, p.classes, c.knobs), p.replicas)] for p in c.pools] for t in per_seed]
        e.seed_rates = [_deployment_rate(cs, e.shares) for cs in caps]
        e.max_rate = float(np.mean(e.seed_rates))
        e.capacities = caps[0]
    finalists += [_evaluated(d, opts) for d in disagg if d.per_seed]
    finalists.sort(key=lambda e: score(e, opts.objective, required))
    finalists = _with_homogeneous(_undominated(finalists)[:FIGURED], finalists)

    # Figures at the refined max rate (each pool at its share of it), then goodput at the scenario's rates.
    ftasks = [FiguresTask(setup, p, e.candidate.knobs, e.max_rate * sh, REFINE, cap.horizon_s, seed)
              for e in finalists for p, cap, sh in zip(e.candidate.pools, e.capacities, e.shares, strict=True)]
    progress(f"figures of the front-runners at their max rate: {len(ftasks)} runs")
    figs = iter(runner.map(pool_figures, ftasks))
    for e in finalists:
        e.figures = [next(figs) for _ in e.candidate.pools]
    finalists.sort(key=lambda e: score(e, opts.objective, required))
    shown = finalists[:opts.top]
    rates = engine_clock_rates(resolved)
    atasks = [FiguresTask(setup, p, e.candidate.knobs, r * sh, SCREEN, cap.horizon_s, seed)
              for e in shown for p, cap, sh in zip(e.candidate.pools, e.capacities, e.shares, strict=True)
              for r in rates]
    progress(f"goodput of the best {len(shown)} at the scenario's rates: {len(atasks)} runs")
    figs = iter(runner.map(pool_figures, atasks))
    for e in shown:
        per_pool = [[next(figs).goodput for _ in rates] for _p in e.candidate.pools]
        e.goodput_at = {r: sum(g[i] for g in per_pool) / e.candidate.gpus for i, r in enumerate(rates)}
    sims = (sum(c.runs + 1 for t in (coarse, screened, *per_seed) for c in t.values()) + len(ftasks) + len(atasks)
            + sum(d.runs for d in disagg))
    notes = [_disagg_note(split, disagg)] if opts.disaggregated else []
    if opts.kv_dtypes or opts.max_num_seqs or opts.max_num_batched_tokens:
        notes.append("engine options searched: " + ", ".join(
            f"{k.kv_dtype.value} KV, max_num_seqs {k.max_num_seqs}, max_num_batched_tokens {k.max_num_batched_tokens}"
            for k in _knobs(resolved, opts)))
    if opts.objective == "min-gpus" and finalists[0].max_rate < required:
        best = max(finalists, key=lambda e: e.max_rate)
        raise PlanError(f"no deployment of up to {budget.gpus} GPUs meets every SLO at the scenario's highest rate, "
                        f"{required:.2f} req/s (engine clock); the closest, {best.candidate.label(len(names))}, "
                        f"reaches {best.max_rate:.2f} req/s: {_limit_text(best)}; raise --gpus or lower the rate")
    every += [Evaluated(d.candidate, [1.0], d.screen.rate, [d.screen], availability=opts.availability)
              for d in disagg]
    ranked = sorted(every, key=lambda e: score(e, opts.objective, required))
    return Plan(s.name, setup, opts.objective, budget, finalists, ranked, required, rates,
                len(coarse) + len(screened) + len(seeds) * sum(map(len, wanted.values()))
                + sum(1 + len(d.per_seed) for d in disagg), sims,
                time.perf_counter() - t0, runner.where, len(seeds), notes,
                sorted(dropped, key=lambda e: -e.estimated))


def _evaluated(d: Simulated, opts: PlanOptions) -> Evaluated:
    """A refined disaggregated contender as the search ranks it: one pool for all the traffic."""
    return Evaluated(d.candidate, [1.0], d.rate, [d.capacity], d.seed_rates, availability=opts.availability)


def _disagg_note(split: Enumeration, disagg: Sequence[Simulated]) -> str:
    refined = sum(bool(d.per_seed) for d in disagg)
    why_not = "".join(f"; {r}" for r in split.rejected)
    return (f"disaggregated: {len(split.screened)} rate-matched candidates estimated (fluid), {len(disagg)} simulated, "
            f"{refined} refined over seeds; one disaggregated pool serves every class (none beside a class split)"
            f"{why_not}")


def _deployment_rate(caps: Sequence[Capacity], shares: Sequence[float]) -> float:
    return min(c.rate / s for c, s in zip(caps, shares, strict=True))


def _limit_text(e: Evaluated) -> str:
    misses = e.capacities[e.binding_pool].misses
    return "; ".join(str(m) for m in misses) if misses else "its replicas saturate"


def _nothing_meets(ranked: Sequence[Evaluated], classes: int) -> str:
    """No candidate meets every SLO even at the lowest rate tried: the one that misses by least, and how."""
    def overshoot(e: Evaluated) -> float:
        return max((m.value_ms / m.target_ms for m in e.misses if m.target_ms > 0), default=float("inf"))
    best = min(ranked, key=overshoot)
    return (f"no deployment meets every SLO, even at a low rate; the closest, {best.candidate.label(classes)}, "
            f"misses: {'; '.join(str(m) for m in best.misses)}; relax those targets or use faster GPUs")


def _nothing_fits(resolved: Resolved, opts: PlanOptions, budget: Budget) -> str:
    s = resolved.scenario
    knobs = _knobs(resolved, opts)[0]
    smallest = smallest_fitting(resolved.model, resolved.gpu, s.dtype, s.engine, knobs, budget.gpus_per_node)
    what = f"{resolved.model.name} {s.dtype.value} on {resolved.gpu.name}"
    if smallest is None:
        return f"{what}: no TP×PP split of up to 1024 GPUs holds one copy of the model; use a smaller dtype"
    cross = smallest.gpus > budget.gpus_per_node
    need = f"{smallest.gpus} GPUs ({smallest.label}{', pipeline stages spread over nodes' if cross else ''})"
    if smallest.gpus <= budget.gpus and cross:
        return (f"{what}: one copy needs {need}, more than one node's {budget.gpus_per_node}; allow "
                "spread_pp_over_nodes (on a configuration, or --spread-pp)")
    nodes = math.ceil(smallest.gpus / budget.gpus_per_node)
    return (f"{what}: a budget of {budget.gpus} GPUs cannot hold one copy of the model; the smallest budget that "
            f"can is {need}: raise --gpus to {smallest.gpus}" + (f" or hardware.nodes to {nodes}" if nodes > 1 else ""))

