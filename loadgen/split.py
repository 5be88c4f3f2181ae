"""The exact split of a plan over N load generator workers, and everything a worker needs (pure data).

Worker k of N sends the open-loop requests k, k+N, k+2N … of every step (in time order) and runs the
closed-loop users k, k+N …; the union of the shares is the plan, request for request, so N workers
send what one process would (same seed, same times, same ids).
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

from loadgen.client import Api
from loadgen.plan import StepPlan
from schema.traffic import SLO, TrafficClass


def split_plan(plan: list[StepPlan], workers: int) -> list[list[StepPlan]]:
    """The steps each worker runs: every step, with its own requests and users."""
    return [[replace(s, requests=s.requests[k::workers],
                     closed=[replace(u, users=u.user_ids[k::workers]) for u in s.closed])
             for s in plan] for k in range(workers)]


@dataclass
class Share:
    """What one worker is given: where to send, what the traffic is, and its steps (set per worker)."""

    target: str
    model: str
    api: Api
    timeout_s: float
    api_key: str | None
    classes: list[TrafficClass]
    base_dir: Path | None
    slos: dict[str, SLO]
    seed: int
    tokenizer: str | None
    workers: int
    time_scale: float = 1.0    # the target engine's clock (run_load's): SLOs are judged on it
    index: int = 0
    steps: list[StepPlan] = field(default_factory=list)

    @property
    def planned(self) -> int:
        """Open-loop requests in this share."""
        return sum(len(s.requests) for s in self.steps)
