"""The re-partitioning policy's record in the run folder: `repartition.jsonl`, one line per decision, per step
of a transition, per transition's outcome and per realised gain (the one schema the report and the offline
comparison read)."""

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

REPARTITION_JSONL = "repartition.jsonl"


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time: float                          # wall clock (Unix seconds)
    decision: int                        # the decision it belongs to (from 1)


class DecisionLine(_Line):
    """One re-plan: move or stay (or error: nothing could be planned), why, and the figures behind it."""

    kind: Literal["decision"] = "decision"
    outcome: Literal["move", "stay", "error"]
    reason: str                          # one line
    current: list[str]                   # the running split, pool labels (`1×TP8 [chat, summarize]`)
    best: list[str] = Field(default_factory=list)   # the planner's best split for the forecast traffic
    shares: dict[str, float] = Field(default_factory=dict)   # the forecast class mix
    rate: float = 0.0                    # the forecast total rate, req/s (wall)
    stay_goodput: float = 0.0            # predicted goodput staying put, req/s (wall)
    best_goodput: float = 0.0            # predicted goodput of the best split, req/s (wall)
    cost: float = 0.0                    # the transition's cost over the horizon, requests
    predicted_gain: float | None = None  # relative; None when staying was predicted to serve nothing
    plan_s: float = 0.0                  # seconds the re-plan took
    gpus: dict[str, int] = Field(default_factory=dict)   # GPUs per shape label when it decided


class StepLine(_Line):
    """One step of a transition (or of its rollback), as executed."""

    kind: Literal["step"] = "step"
    line: str                            # the step's own line (steps.py)
    seconds: float
    error: str | None = None
    rollback: bool = False


class TransitionLine(_Line):
    """How a move ended: the target reached, or rolled back, and the GPUs per shape afterwards."""

    kind: Literal["transition"] = "transition"
    reached: bool
    reason: str
    seconds: float
    gpus: dict[str, int]


class RealisedLine(_Line):
    """A move's realised gain: goodput measured over a window after it ÷ the goodput predicted for staying − 1."""

    kind: Literal["realised"] = "realised"
    measured_goodput: float
    stay_goodput: float
    realised_gain: float | None


Line = Annotated[DecisionLine | StepLine | TransitionLine | RealisedLine, Field(discriminator="kind")]
_LINE: TypeAdapter[Line] = TypeAdapter(Line)


def append_line(folder: Path, line: Line) -> None:
    with (folder / REPARTITION_JSONL).open("a") as f:
        f.write(line.model_dump_json() + "\n")


def read_lines(folder: Path) -> list[Line]:
    """Every line of the run folder's repartition.jsonl (none when there is no such file)."""
    path = folder / REPARTITION_JSONL
    if not path.exists():
        return []
    return [_LINE.validate_python(json.loads(s)) for s in path.read_text().splitlines() if s.strip()]
