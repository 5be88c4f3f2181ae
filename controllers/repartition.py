"""The re-partitioning decision (pure): is the planner's best split worth moving to, now?

Every `repartition.interval_s` the policy (controllers/repartitioner.py) forecasts the traffic, re-plans the GPU
budget for it (a `Replanner`) with the simulator corrected by what it measured, and plans the transition to the
best split (controllers/transition). This module values that move and decides:

- **Value over the forecast horizon H** (wall seconds; goodput G in requests/s meeting their SLO, wall clock;
  the forecast says nothing beyond H, so nothing beyond it is counted): staying put serves `G_stay × H`. Moving
  takes the transition's T seconds (cost.py, at most H), during which the GPUs that serve (old or new
  configurations) serve at the running split's goodput per GPU — `G_stay × (T − lost_gpu_s ÷ budget)` —, then
  serves `G_best × (H − T)`. So move = `G_best × H − cost` with cost = `(G_best − G_stay) × T + G_stay ×
  lost_gpu_s ÷ budget`. A held class is inside the lost GPU-seconds (no GPU serves it while held), so its
  held seconds are not charged again. The relative gain is (move − stay) ÷ stay.
- **Move only when** the gain of moving to the same split is ≥ `min_gain` at every re-plan for at least
  `min_dwell_s`, at least `min_dwell_s` have passed since the last move, and fewer than `max_moves_per_hour`
  moves were made in the last hour. A gain that drops below `min_gain`, or a best split that changes, restarts
  the dwell: noise around a flat mix never moves, and a forecast that overshoots a step (Holt's trend) for a
  re-plan or two does not move to the split it overshoots to.
- **Realised gain**: goodput measured after a move ÷ the goodput predicted for staying, minus 1.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from controllers.correction import Corrections, Observation
from controllers.plan.candidates import Pool, Shape
from controllers.plan.parallel import Runner
from controllers.scoreboard import Scoreboard
from controllers.transition.cost import TransitionCost
from deployments.resolve import Resolved
from deployments.routing import Weights
from schema.controller import RepartitionConfig
from schema.deployment import ParallelConfig

HOUR_S = 3600.0

Factors = Mapping[tuple[int, int], tuple[float, float]]   # (tp, pp) -> (TTFT factor, TPOT factor)


class Replan(Protocol):
    """What a re-plan answers (controllers/plan/replan.py's `Replan` has exactly these fields)."""

    @property
    def best(self) -> tuple[Pool, ...]: ...          # the planner's best deployment for the traffic
    @property
    def best_goodput(self) -> float: ...             # its predicted goodput at the traffic's rate (req/s, wall)
    @property
    def current_goodput(self) -> float: ...          # the same figure for the running deployment
    @property
    def rate(self) -> float: ...                     # the offered rate planned for (req/s, wall)
    @property
    def elapsed_s(self) -> float: ...
    @property
    def evaluated(self) -> int: ...                  # deployments considered
    @property
    def why(self) -> str: ...                        # one line


class Replanner(Protocol):
    """`controllers/plan/replan.py: replan`'s signature: `resolved` carries the traffic to plan for
    (`Scenario.with_mix`), `current` the running pools, `factors` the correction factors per shape."""

    def __call__(self, resolved: Resolved, current: Sequence[Pool], factors: Factors, budget_s: float,
                 runner: Runner) -> Replan: ...


@dataclass(frozen=True)
class Valuation:
    """A move against staying put, over the horizon (requests meeting their SLO)."""

    horizon_s: float
    stay: float                 # current_goodput × horizon
    gross: float                # best_goodput × horizon
    cost: float                 # the transition's cost, in requests
    same: bool                  # the best split is the running one: nothing to move
    target: tuple[Pool, ...] = ()   # the split it would move to

    @property
    def move(self) -> float:
        return self.gross - self.cost

    @property
    def gain(self) -> float:
        """(move − stay) ÷ stay; 0 when there is nothing to move, +inf when staying serves nothing and moving does."""
        if self.same:
            return 0.0
        if self.stay <= 0:
            return math.inf if self.move > 0 else 0.0
        return (self.move - self.stay) / self.stay


def same_split(a: Sequence[Pool], b: Sequence[Pool]) -> bool:
    """The same pools (shape, replicas, classes), in any order."""
    return sorted(a) == sorted(b)


def value_move(replan: Replan, current: Sequence[Pool], cost: TransitionCost | None, budget_gpus: int,
               horizon_s: float) -> Valuation:
    """The move to `replan.best` valued against staying on `current` (module docstring); `cost` None: no
    transition (the best split is the current one)."""
    same = cost is None or same_split(replan.best, current)
    price = 0.0
    if cost is not None and not same:
        t = min(cost.duration_s, horizon_s)
        lost = cost.lost_gpu_s * (t / cost.duration_s) if cost.duration_s > 0 else 0.0
        per_gpu = replan.current_goodput / budget_gpus if budget_gpus > 0 else 0.0
        price = (replan.best_goodput - replan.current_goodput) * t + per_gpu * lost
    return Valuation(horizon_s, replan.current_goodput * horizon_s, replan.best_goodput * horizon_s, price, same,
                     tuple(replan.best))


@dataclass(frozen=True)
class Dwell:
    """What the decision remembers between re-plans."""

    gain_since: float | None = None      # since when the gain of moving to `target` has been ≥ min_gain
    target: tuple[Pool, ...] = ()
    last_move: float | None = None
    moves: tuple[float, ...] = ()        # times of the moves (the last hour's matter)


@dataclass(frozen=True)
class Verdict:
    move: bool
    reason: str                          # one line


def decide(dwell: Dwell, now: float, valuation: Valuation, cfg: RepartitionConfig) -> tuple[Verdict, Dwell]:
    """Move or stay (rules in the module docstring), and the dwell state after this re-plan."""
    gain = valuation.gain
    if valuation.same:
        return Verdict(False, "stay: the best split is the running one"), replace(dwell, gain_since=None)
    if gain < cfg.min_gain:
        return (Verdict(False, f"stay: predicted gain {_pct(gain)} < min_gain {_pct(cfg.min_gain)}"),
                replace(dwell, gain_since=None))
    same_target = dwell.gain_since is not None and same_split(dwell.target, valuation.target)
    since = dwell.gain_since if same_target and dwell.gain_since is not None else now
    held = now - since
    waiting = replace(dwell, gain_since=since, target=valuation.target)
    if held < cfg.min_dwell_s:
        return (Verdict(False, f"stay: gain {_pct(gain)} held {held:.0f} s of min_dwell_s {cfg.min_dwell_s:g} s"),
                waiting)
    if dwell.last_move is not None and now - dwell.last_move < cfg.min_dwell_s:
        return (Verdict(False, f"stay: gain {_pct(gain)}, but the last move was {now - dwell.last_move:.0f} s ago "
                               f"(< min_dwell_s {cfg.min_dwell_s:g} s)"), waiting)
    recent = tuple(t for t in dwell.moves if now - t < HOUR_S)
    if len(recent) >= cfg.max_moves_per_hour:
        return (Verdict(False, f"stay: gain {_pct(gain)}, but {len(recent)} moves in the last hour "
                               f"(max_moves_per_hour {cfg.max_moves_per_hour})"), replace(waiting, moves=recent))
    return (Verdict(True, f"move: gain {_pct(gain)} ≥ min_gain {_pct(cfg.min_gain)} held {held:.0f} s"),
            Dwell(last_move=now, moves=(*recent, now)))


def realised_gain(measured_goodput: float, stay_goodput: float) -> float | None:
    """Goodput measured after a move ÷ the goodput predicted for staying, minus 1 (None when staying was
    predicted to serve nothing)."""
    return measured_goodput / stay_goodput - 1.0 if stay_goodput > 0 else None


def measured_goodput(board: Scoreboard) -> float:
    """Requests/s meeting their class's SLO over the scoreboard's window, every configuration and class."""
    return sum(p.goodput for p in board.pairs.values())


def pools_of(configs: Sequence[ParallelConfig], weights: Weights, order: Sequence[str] = ()) -> tuple[Pool, ...]:
    """The running split as the planner's pools: each class in the pool of the configuration that has its
    largest weight (the first on a tie), the classes of a pool in `order` (the scenario's, as the planner puts
    them; default: the routing's); a configuration that carries no class this way is left out."""
    classes: dict[str, list[str]] = {c.name: [] for c in configs}
    rank = {c: i for i, c in enumerate(order)}
    for cls in sorted(weights, key=lambda c: rank.get(c, len(rank))):
        live = {n: w for n, w in weights[cls].items() if w > 0 and n in classes}
        if live:
            classes[max(live, key=lambda n: live[n])].append(cls)
    return tuple(Pool(Shape(c.tp, c.pp), c.replicas, tuple(classes[c.name])) for c in configs if classes[c.name])


def factor_pairs(corrections: Corrections) -> dict[tuple[int, int], tuple[float, float]]:
    """The correction factors in the re-planner's form: (tp, pp) -> (TTFT, TPOT)."""
    return {shape: (f.ttft, f.tpot) for shape, f in corrections.items()}


Predicted = Mapping[tuple[str, str], tuple[float | None, float | None]]  # (config, class) -> (TTFT s, TPOT s)


def observations(board: Scoreboard, configs: Sequence[ParallelConfig], predicted: Predicted, q: float
                 ) -> list[Observation]:
    """Per (configuration, class) seen in the window: the measured `q`-quantile TTFT and TPOT against the
    simulator's prediction of them at the load the configuration saw (`predicted`), for correction.correct."""
    shapes = {c.name: (c.tp, c.pp) for c in configs}
    out = []
    for (cfg, cls), p in board.pairs.items():
        if cfg not in shapes or (cfg, cls) not in predicted or p.samples <= 0:
            continue
        tp, pp = shapes[cfg]
        ttft, tpot = predicted[(cfg, cls)]
        out.append(Observation(tp, pp, "ttft", p.ttft.at(q), ttft, p.samples))
        out.append(Observation(tp, pp, "tpot", p.tpot.at(q), tpot, p.samples))
    return out


def _pct(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:+.1%}"
