"""The policy over scenarios/shift.yaml's schedule (its knobs as shipped: EWMA forecast 600 s ahead, 30 s
re-plans, 60 s dwell, 15% margin), offline: Prometheus reads each class's arrivals over a 30 s window with
Poisson noise; the re-planner answers the planner's per-phase splits (README, "Traffic that shifts": TP8 by day,
TP4 [chat] + PP4 [summarize] in the evening, TP2 [chat] + PP6 [summarize] at night), the right split serving what
is offered and any other 40% of it; the real transition planner plans each move on the 8-GPU node (each new
configuration starting in 5 s, drains bounded by 10 s); the fleet is an in-memory fake (the real one is on branch
`fleet`). At most one transition per phase change, after the dwell and early in the phase; under the flat mix
of one phase, none."""

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from controllers.controller import ControllerMetrics
from controllers.plan.candidates import Pool, Shape
from controllers.plan.parallel import InProcess, Runner
from controllers.plan.replan import Replan
from controllers.repartition_log import TransitionLine, read_lines
from controllers.repartitioner import Repartitioner, hardware_nodes
from controllers.scoreboard import Sample, Scoreboard, traffic_queries
from controllers.transition.steps import SetView, Step, apply
from deployments.resolve import Resolved, load_scenario
from schema.deployment import ParallelConfig

ROOT = Path(__file__).resolve().parents[2]
DAY = (Pool(Shape(8, 1), 1, ("chat", "summarize")),)
EVENING = (Pool(Shape(4, 1), 1, ("chat",)), Pool(Shape(1, 4), 1, ("summarize",)))
NIGHT = (Pool(Shape(2, 1), 1, ("chat",)), Pool(Shape(1, 6), 1, ("summarize",)))



def answers(resolved: Resolved, current: Sequence[Pool], factors: Mapping[tuple[int, int], tuple[float, float]],
            budget_s: float, runner: Runner) -> Replan:
    s = resolved.scenario
    chat = next((c.share for c in s.classes if c.name == "chat"), 0.0)
    rate = float(getattr(s.load.arrival, "rate", 0.0))
    best = DAY if chat > 0.7 else EVENING if chat > 0.3 else NIGHT
    return Replan(best, rate, rate if sorted(current) == sorted(best) else 0.4 * rate, rate,
                  elapsed_s=1.0, evaluated=1, why="the per-phase answers")


class Fleet:
    def __init__(self, view: SetView):
        self.view = view

    def execute(self, step: Step) -> float:
        self.view = apply(self.view, step)
        used = sum(c.gpus for c in self.view.configs.values())
        assert used <= 8, step.line
        return 1.0


def readings(resolved: Resolved, clock: list[float], seed: int, phases: Sequence[int] | None = None
             ) -> Callable[[str], list[Sample]]:
    """Each class's arrivals/s over the last 30 s at the clock's time (Poisson counts), from the schedule."""
    s = resolved.scenario
    rnd = random.Random(seed)
    rate_query = traffic_queries()["rate"]
    chosen = [s.load.phases[i] for i in phases] if phases is not None else s.load.phases

    def query(expr: str) -> list[Sample]:
        if expr != rate_query:
            return []
        t, i = clock[0], 0
        while i < len(chosen) - 1 and t >= chosen[i].duration_s:
            t -= chosen[i].duration_s
            i += 1
        ph = chosen[i]
        return [({"sla_class": c}, _poisson(rnd, ph.rate * share * 30.0) / 30.0) for c, share in ph.shares.items()]
    return query


def _poisson(rnd: random.Random, mean: float) -> int:
    n, t = 0, rnd.expovariate(1.0)
    while t < mean:
        n += 1
        t += rnd.expovariate(1.0)
    return n


def run(tmp_path: Path, seed: int, phases: Sequence[int] | None = None) -> tuple[list[float], list[TransitionLine]]:
    resolved = load_scenario(ROOT / "scenarios" / "shift.yaml")
    s = resolved.scenario
    first = (DAY, EVENING, NIGHT)[phases[0] if phases else 0]
    configs = {f"start{i}": ParallelConfig(name=f"start{i}", tp=p.shape.tp, pp=p.shape.pp, replicas=p.replicas)
               for i, p in enumerate(first)}
    view = SetView(configs, {c: {n: 1.0} for (n, _), p in zip(configs.items(), first, strict=True) for c in p.classes})
    clock = [0.0]
    total = sum(s.load.phases[i].duration_s for i in (phases or range(len(s.load.phases))))
    r = Repartitioner(resolved, view, readings(resolved, clock, seed, phases), lambda: Scoreboard(0.0, {}, stale=True),
                      answers, InProcess(), Fleet(view), lambda c: 5.0, hardware_nodes(resolved), drain_s=10.0,
                      folder=tmp_path, metrics=ControllerMetrics(), clock=lambda: clock[0])
    moves = []
    while clock[0] < total:
        if r.tick().outcome == "move":
            moves.append(clock[0])
        clock[0] += s.controller.repartition.interval_s
    return moves, [x for x in read_lines(tmp_path) if isinstance(x, TransitionLine)]


def test_each_phase_change_moves_once_after_the_dwell(tmp_path: Path) -> None:
    for seed in range(3):
        folder = tmp_path / str(seed)
        folder.mkdir()
        moves, transitions = run(folder, seed)
        assert len(moves) == 2, moves                                   # day → evening, evening → night
        assert 900 + 60 <= moves[0] < 900 + 300 and 1800 + 60 <= moves[1] < 1800 + 300
        assert all(t.reached for t in transitions)
        assert transitions[-1].gpus == {"TP2": 2, "PP6": 6}


def test_a_flat_mix_never_moves(tmp_path: Path) -> None:
    for phase in range(3):
        folder = tmp_path / str(phase)
        folder.mkdir()
        moves, _ = run(folder, seed=phase, phases=[phase])
        assert moves == []
