"""Plan vs live: the planned deployments' predicted ranks and capacities against what a live run of the
written scenario measured (each deployment's share of every load step, per class attainment).

A deployment passes a step when every class it served there met its attainment target, judged on the
server's own TTFT and TPOT (engine clock) where it reports them: the plan predicts the deployment, not the
delay that the testbed's own live path (proxy, relay, a busy machine) adds on top. Its live rank
follows how many steps it passed from the lowest (its measured capacity lies between the last rate it
passed and the first it failed), ties broken by the worst class attainment at the first failed step.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from controllers.records import Rec
from schema.plan import PlannedDeployment
from schema.scenario import Scenario
from schema.traffic import SLO


@dataclass(frozen=True)
class StepOutcome:
    offered: float                    # requests/s offered to this deployment (engine clock)
    requests: int
    attainment: dict[str, float]      # per class it served in this step
    met: bool | None                  # None: no request in this step
    predicted: bool                   # whether the simulator, offline, meets every SLO under this step's load


@dataclass(frozen=True)
class LiveDeployment:
    planned: PlannedDeployment
    steps: list[StepOutcome]
    live_rank: int = 0

    @property
    def passed(self) -> int:
        """Steps met in a row from the lowest rate."""
        n = 0
        for st in self.steps:
            if not st.met:
                break
            n += 1
        return n

    @property
    def live_capacity(self) -> tuple[float, float | None]:
        """The measured capacity's bracket: the last rate met and the first missed (None: none missed)."""
        lo = self.steps[self.passed - 1].offered if self.passed else 0.0
        hi = self.steps[self.passed].offered if self.passed < len(self.steps) else None
        return lo, hi

    def _tiebreak(self) -> float:
        if self.passed >= len(self.steps):
            return 1.0
        return min(self.steps[self.passed].attainment.values(), default=0.0)


@dataclass(frozen=True)
class PlanVsLive:
    deployments: list[LiveDeployment]           # by predicted rank
    rates_per_unit: list[float]                 # the ladder (per deployment, or per GPU), engine clock

    @property
    def inversions(self) -> list[tuple[int, int]]:
        """Pairs (better, worse) by predicted rank that the live run ranked the other way round."""
        d = self.deployments
        return [(a.planned.rank, b.planned.rank) for i, a in enumerate(d) for b in d[i + 1:]
                if a.live_rank > b.live_rank]

    @property
    def ranks_agree(self) -> bool:
        return not self.inversions

    @property
    def pairs_separated(self) -> tuple[int, int]:
        """(pairs the live run told apart by the steps they met, all pairs); the others only by the tie-break."""
        d = self.deployments
        pairs = [(a, b) for i, a in enumerate(d) for b in d[i + 1:]]
        return sum(a.passed != b.passed for a, b in pairs), len(pairs)

    @property
    def steps_agree(self) -> int:
        """Steps (of all deployments) where the live outcome is the predicted one."""
        return sum(1 for d in self.deployments for st in d.steps if st.met is not None and st.met == st.predicted)

    @property
    def steps_measured(self) -> int:
        return sum(1 for d in self.deployments for st in d.steps if st.met is not None)


def met_at_server(r: Rec, slo: SLO) -> bool:
    """Whether a request met its SLO by the server's own figures (the client's where the server gave none)."""
    if not r.ok or r.server_ttft_s is None:
        return r.slo_met
    tpot = r.server_tpot_s if r.server_tpot_s is not None else r.tpot_s
    e2e = r.server_ttft_s + (tpot or 0.0) * max(0, r.output_tokens - 1)
    return slo.met(r.server_ttft_s, tpot, e2e)


def compare(scenario: Scenario, records: Sequence[Rec]) -> PlanVsLive | None:
    """The comparison for a run of a scenario written by `parallax plan` (None for any other scenario)."""
    plan = scenario.plan
    if plan is None:
        return None
    scale = scenario.engine.clock_scale
    units = sum(plan.unit(d) for d in plan.deployments)
    per_unit = [r * scale / units for r in scenario.load.rates] or [0.0]
    targets = {c.name: c.slo.attainment for c in scenario.classes}
    slos = {c.name: c.slo for c in scenario.classes}
    out = []
    for d in plan.deployments:
        mine = set(d.configs)
        steps = []
        for j, x in enumerate(per_unit):
            recs = [r for r in records if r.config in mine and r.rate_step == j]
            att: dict[str, float] = {}
            for cls in targets:
                rs = [r for r in recs if r.sla_class == cls]
                if rs:
                    att[cls] = sum(met_at_server(r, slos[cls]) for r in rs) / len(rs)
            met = all(att[c] >= targets[c] for c in att) if att else None
            offered = x * plan.unit(d)
            predicted = d.predicted_steps[j] if j < len(d.predicted_steps) else offered <= d.max_rate
            steps.append(StepOutcome(offered, len(recs), att, met, predicted))
        out.append(LiveDeployment(d, steps))
    order = sorted(out, key=lambda ld: (-ld.passed, -ld._tiebreak(), ld.planned.rank))
    ranked = {id(ld): i + 1 for i, ld in enumerate(order)}
    out = [LiveDeployment(ld.planned, ld.steps, ranked[id(ld)]) for ld in out]
    return PlanVsLive(out, per_unit)
