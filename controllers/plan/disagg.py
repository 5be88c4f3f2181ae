"""Disaggregated deployments for the planner: x prefill and y decode replicas, each role of its own TP×PP,
rate-matched, screened with the fluid estimate, the contenders simulated.

- Roles: every shape `candidates.shapes` allows whose memory plan holds what its role must (the scenario's
  own per-role check, `resolve.role_problem`: a prefill replica the longest prompt, a decode replica the
  longest request); a decode shape that cannot hold one request is never proposed, and says why.
- Rate matching: for each (prefill shape, decode shape) and each count y of decode replicas, the fewest x
  prefill replicas whose prompt rate covers the decode pool's request rate (both from the fluid estimate on
  one pair), and x − 1 and x + 1 beside it, as many as fit when the budget holds fewer (x·GPUs(prefill) +
  y·GPUs(decode) within the budget), packed on its nodes (the roles' placement prices every KV handoff:
  inside a node or through the NICs).
- Screening: `disagg_steady_state.estimate` on the traffic's mean prompt and output lengths, the decode
  batch held to the tightest TPOT target, its rate within the tightest TTFT target; `CONTENDERS` of them,
  the best of each role shape first, are simulated (`DisaggregatedReplicas`, through `evaluate.capacity`:
  the same SLO judgment as an aggregated pool), the `REFINED` best of those again at the refining fidelity
  over the search's seeds.
Scope: one disaggregated pool serving every class; a disaggregated pool beside other pools (a class split)
is not searched.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from controllers.plan.candidates import Budget, Candidate, Knobs, Pool, Prefill, Shape, packs, shapes
from controllers.plan.evaluate import REFINE, SCREEN, Capacity, Fidelity, Saturation, Setup, capacity
from controllers.plan.parallel import Runner
from deployments.engines.sim.disagg import DisaggregatedReplicas
from deployments.engines.sim.disagg_steady_state import DisaggSteadyState, estimate
from deployments.engines.sim.steady_state import kv_capacity_seqs
from deployments.placement import role_nodes
from deployments.resolve import role_problem
from loadgen.lengths import mean_lengths
from schema.deployment import ReplicaGroup, Role

CONTENDERS = 8     # disaggregated candidates simulated (chosen by the fluid estimate: `Enumeration.contenders`)
REFINED = 3        # of those, refined over seeds (the best simulated)


@dataclass(frozen=True)
class Traffic:
    """What the fluid estimate sees of the traffic: mean lengths and the tightest targets."""

    isl: int
    osl: int
    ttft_s: float             # inf: no TTFT target
    tpot_s: float | None


def traffic(setup: Setup) -> Traffic:
    """The classes' share-weighted mean prompt and output lengths, and their tightest TTFT and TPOT targets."""
    means = [(c.share, *mean_lengths(c, setup.base_dir)) for c in setup.classes]
    total = sum(s for s, _, _ in means)
    isl = sum(s * i for s, i, _ in means) / total
    osl = sum(s * o for s, _, o in means) / total
    ttft = [c.slo.ttft_ms for c in setup.classes if c.slo.ttft_ms is not None]
    tpot = [c.slo.tpot_ms for c in setup.classes if c.slo.tpot_ms is not None]
    return Traffic(max(1, round(isl)), max(2, round(osl)), min(ttft) / 1e3 if ttft else math.inf,
                   min(tpot) / 1e3 if tpot else None)


@dataclass(frozen=True)
class Screened:
    """A disaggregated candidate and its fluid estimate."""

    candidate: Candidate
    fluid: DisaggSteadyState
    rate: float               # requests/s the estimate serves within the TTFT target (0: none)


@dataclass(frozen=True)
class Enumeration:
    """Every rate-matched disaggregated candidate, best first by the fluid estimate, and why some roles were
    left out (a role shape that cannot hold what it must)."""

    screened: list[Screened]
    rejected: list[str]

    def contenders(self) -> list[Screened]:
        """The `CONTENDERS` to simulate, of those the estimate gives some rate: the best of each prefill shape,
        then the best of each decode shape, then the rest, each in the estimate's order. The estimate ranks
        the roles' shapes roughly (it leaves out queueing under batching, chunking, the decode admission), so
        the simulator sees every shape that leads somewhere before a shape's variants."""
        live = [s for s in self.screened if s.rate > 0]
        prefill: dict[Shape, Screened] = {}
        decode: dict[Shape, Screened] = {}
        for s in live:
            p = s.candidate.pools[0]
            assert p.prefill is not None
            prefill.setdefault(p.prefill.shape, s)
            decode.setdefault(p.shape, s)
        order = dict.fromkeys([*prefill.values(), *decode.values(), *live])
        return list(order)[:CONTENDERS]


def fluid_key(objective: str, required: float) -> Callable[[float, int], tuple[float, ...]]:
    """The planner's objective on (rate, GPUs), smaller is better, as `search.score` ranks deployments."""
    if objective == "max-rate":
        return lambda rate, gpus: (-rate, gpus)
    if objective == "goodput-per-gpu":
        return lambda rate, gpus: (-rate / gpus, -rate)
    return lambda rate, gpus: (rate < required, gpus if rate >= required else 0, -rate)


def role_shapes(setup: Setup, knobs: Knobs, budget: Budget, role: Role) -> tuple[list[Shape], str | None]:
    """The shapes a replica of `role` may take (fewer GPUs than the budget: the other role needs one), and the
    problem of the largest one that may not, if any."""
    spec = setup.spec_with(knobs)
    fitting = shapes(setup.model, setup.gpu, spec.dtype, spec.engine, knobs, Budget(budget.gpus - 1,
                     budget.gpus_per_node), setup.spread_pp) if budget.gpus > 1 else []
    out, problem = [], None
    for s in fitting:
        group = ReplicaGroup(role, s.tp, s.pp, 1, setup.spread_pp and s.gpus > budget.gpus_per_node)
        why = role_problem(spec, group, "plan", setup.model, setup.gpu, setup.base_dir)
        if why is None:
            out.append(s)
        else:
            problem = why
    return out, problem


def enumerate_disaggregated(setup: Setup, knobs_list: Sequence[Knobs], budget: Budget, objective: str,
                            required: float) -> Enumeration:
    """Every rate-matched disaggregated pool of every class within the budget, ranked by the fluid estimate."""
    t = traffic(setup)
    classes = tuple(c.name for c in setup.classes)
    key = fluid_key(objective, required)
    out: list[Screened] = []
    rejected: list[str] = []
    for knobs in knobs_list:
        prefills, p_why = role_shapes(setup, knobs, budget, "prefill")
        decodes, d_why = role_shapes(setup, knobs, budget, "decode")
        rejected += [f"no {role} replica fits: {why}" for role, shapes_, why in
                     (("decode", decodes, d_why), ("prefill", prefills, p_why)) if not shapes_ and why]
        for sp in prefills:
            for sd in decodes:
                out += _rate_matched(setup, knobs, budget, classes, t, sp, sd)
    out.sort(key=lambda s: key(s.rate, s.candidate.gpus))
    return Enumeration(out, rejected)


def _rate_matched(setup: Setup, knobs: Knobs, budget: Budget, classes: tuple[str, ...], t: Traffic, sp: Shape,
                  sd: Shape) -> list[Screened]:
    """For each count of decode replicas of `sd`, the fewest prefill replicas of `sp` that keep up with them
    (fluid), one fewer and one more, each capped at what the budget holds beside them; those that pack on its
    nodes. The setup's correction factors (TTFT of `sp`, TPOT of `sd`) tighten the targets the estimate meets."""
    one = setup.replicas(Pool(sd, 1, classes, Prefill(sp, 1)), knobs)
    assert isinstance(one, DisaggregatedReplicas)
    ttft_s = t.ttft_s / setup.factors(sp)[0]
    tpot_s = t.tpot_s / setup.factors(sd)[1] if t.tpot_s is not None else None
    pair = estimate(one, t.isl, t.osl, tpot_s)
    out = []
    for y in range(1, (budget.gpus - sp.gpus) // sd.gpus + 1):
        matched = max(1, math.ceil(y * pair.decode_rate / pair.prefill_rate - 1e-9))
        most = (budget.gpus - y * sd.gpus) // sp.gpus
        for x in sorted({min(max(1, x), most) for x in (matched - 1, matched, matched + 1)}):
            pool = Pool(sd, y, classes, Prefill(sp, x))
            if not packs([pool], budget, setup.spread_pp):
                continue
            nodes = role_nodes(pool.config("plan", budget.gpus_per_node, setup.spread_pp), budget.gpus_per_node)
            replicas = DisaggregatedReplicas(one.prefill, one.decode, x, y, (nodes["prefill"], nodes["decode"]))
            fluid = estimate(replicas, t.isl, t.osl, tpot_s)
            out.append(Screened(Candidate((pool,), knobs), fluid, fluid.rate_within(ttft_s)))
    return out


@dataclass(frozen=True)
class CapacityTask:
    setup: Setup
    pool: Pool
    knobs: Knobs
    fidelity: Fidelity
    seed: int
    guess: float
    saturation: Saturation | None = None


def pool_capacity(task: CapacityTask) -> Capacity:
    return capacity(task.setup, task.pool, task.knobs, task.fidelity, task.seed, task.guess or None,
                    task.saturation)


@dataclass(frozen=True)
class Simulated:
    """A contender's capacity, simulated: at the screening fidelity, and (the refined) per seed."""

    screened: Screened
    screen: Capacity
    per_seed: list[Capacity]      # empty: not refined

    @property
    def candidate(self) -> Candidate:
        return self.screened.candidate

    @property
    def capacity(self) -> Capacity:
        return self.per_seed[0] if self.per_seed else self.screen

    @property
    def seed_rates(self) -> list[float]:
        return [c.rate for c in self.per_seed]

    @property
    def rate(self) -> float:
        return float(np.mean(self.seed_rates)) if self.per_seed else self.screen.rate

    @property
    def runs(self) -> int:
        return sum(c.runs + 1 for c in (self.screen, *self.per_seed))


def simulate(runner: Runner, setup: Setup, contenders: Sequence[Screened], seeds: Sequence[int], objective: str,
             required: float) -> list[Simulated]:
    """Every contender's capacity at the SLO at the screening fidelity (from its fluid rate), then the
    `REFINED` best again at the refining fidelity over `seeds`; best first (the refined ones)."""
    key = fluid_key(objective, required)
    tasks = [CapacityTask(setup, s.candidate.pools[0], s.candidate.knobs, SCREEN, seeds[0], s.rate)
             for s in contenders]
    screen = runner.map(pool_capacity, tasks)
    order = sorted(range(len(tasks)), key=lambda i: key(screen[i].rate, contenders[i].candidate.gpus))
    best = [i for i in order if screen[i].rate > 0][:REFINED]
    refine = [CapacityTask(setup, tasks[i].pool, tasks[i].knobs, REFINE, seed, screen[i].rate,
                           Saturation(screen[i].saturation / tasks[i].pool.replicas))
              for i in best for seed in seeds]
    caps = iter(runner.map(pool_capacity, refine))
    per_seed = {i: [next(caps) for _ in seeds] for i in best}
    out = [Simulated(contenders[i], screen[i], per_seed.get(i, [])) for i in order]
    return sorted(out, key=lambda s: (not s.per_seed, key(s.rate, s.candidate.gpus)))


def comparison(setup: Setup, disagg: Candidate, disagg_rate: float, agg: Candidate, agg_rate: float,
               tokens_per_gpu: tuple[float, float]) -> list[str]:
    """What the best disaggregated deployment gains over the best aggregated one, or why it loses: its pools'
    loads at its rate (fluid), the decode batch its KV cache and the TPOT target allow, and the KV handoff's
    share of the TTFT target."""
    t = traffic(setup)
    pool = disagg.pools[0]
    assert pool.prefill is not None
    replicas = setup.replicas(pool, disagg.knobs)
    assert isinstance(replicas, DisaggregatedReplicas)
    fluid = estimate(replicas, t.isl, t.osl, t.tpot_s)
    d, a = disagg.pools[0].label, agg.label(len(setup.classes))
    gain = disagg_rate / agg_rate - 1 if agg_rate > 0 else math.inf
    td, ta = tokens_per_gpu
    head = (f"disaggregated {d} {'beats' if disagg_rate > agg_rate else 'loses to'} the best aggregated {a}: "
            f"{disagg_rate:.2f} vs {agg_rate:.2f} req/s ({gain:+.0%}), {td:,.0f} vs {ta:,.0f} output tok/s/GPU, "
            f"on {disagg.gpus} vs {agg.gpus} GPUs")
    kv_seqs = kv_capacity_seqs(replicas.decode, t.isl, t.osl)
    most = min(kv_seqs, disagg.knobs.max_num_seqs)
    cap = f"its KV cache holds {kv_seqs}" if kv_seqs < disagg.knobs.max_num_seqs else f"max_num_seqs {most}"
    held = fluid.decode_running < most - 0.5
    busy_p = disagg_rate / fluid.prefill_rate if fluid.prefill_rate > 0 else 0.0
    busy_d = disagg_rate / fluid.decode_rate if fluid.decode_rate > 0 else 0.0
    pools = (f"at that rate (fluid estimate, ISL {t.isl} / OSL {t.osl}) its prefill pool ({pool.prefill.gpus} GPUs) "
             f"is {busy_p:.0%} busy, its decode pool ({pool.shape.gpus * pool.replicas} GPUs) {busy_d:.0%}; at full "
             f"load a decode replica runs {fluid.decode_running:.0f} sequences ({'held to the TPOT target; ' * held}"
             f"{cap}) at {fluid.tpot_s * 1e3:.1f} ms per token")
    handoff = f"each KV handoff takes {fluid.transfer_s * 1e3:.1f} ms"
    share = fluid.transfer_s / t.ttft_s if math.isfinite(t.ttft_s) else 0.0
    if math.isfinite(t.ttft_s):
        handoff += (f", {share:.0%} of the {t.ttft_s * 1e3:.0f} ms TTFT target, beside a "
                    f"{fluid.prefill_s * 1e3:.0f} ms prefill")
    reasons = [why for why, holds in (
        (f"its prefill GPUs idle {1 - busy_p:.0%} of the time", busy_p < 0.5),
        (f"the KV handoff takes {share:.0%} of the TTFT target", share > 0.1),
        (f"the decode pool's KV cache caps a replica at {kv_seqs} sequences", kv_seqs < disagg.knobs.max_num_seqs
         and not held)) if holds]
    if disagg_rate <= agg_rate and reasons:
        head += "; mainly because " + " and ".join(reasons)
    return [head, pools, handoff]
