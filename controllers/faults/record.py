"""`faults.jsonl`: one record per fault of the scenario, what `parallax run` did and saw, in the run folder.

Times are Unix seconds (as the request records'); `phases` are seconds after `applied_at` at which each step
that follows the action was seen, e.g. for `kill_replica` `noticed` (Serve lists the replica as not running)
and `replaced` (a new replica runs); `ended_at` is when the fault's effect was over (see `PHASES`).
"""

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schema.faults import Fault, FaultAction

FAULTS_JSONL = "faults.jsonl"

# The phases each action's record may hold, in the order they happen; the last one ends the fault's effect.
PHASES: dict[FaultAction, tuple[str, ...]] = {
    "kill_replica": ("noticed", "replaced"),
    "kill_worker": ("noticed", "replaced"),
    "slow_gpu": ("restored",),
    "restart_prometheus": ("stopped", "ready", "stale", "fresh"),
    "pause_controller": ("resumed",),
    "kill_load_worker": (),
}


class FaultRecord(BaseModel):
    """What happened to one fault of the scenario."""

    model_config = ConfigDict(extra="ignore")

    index: int = Field(description="its position in the scenario's faults")
    fault: Fault
    due_at: float = Field(description="Unix time it was due: the load's start + at_s")
    applied_at: float | None = Field(default=None, description="Unix time the action was taken (None: not taken)")
    ok: bool = False
    detail: str = ""
    replica: str | None = Field(default=None, description="the Serve replica id it hit, where it hit one")
    replacement: str | None = Field(default=None, description="the replica Serve started in its place, once seen")
    phases: dict[str, float] = Field(default_factory=dict, description="seconds after applied_at each phase was seen")
    ended_at: float | None = Field(default=None, description="Unix time its effect was over (None: not seen within "
                                   "the run)")

    def phase_at(self, name: str) -> float | None:
        """Unix time of phase `name`, where it was seen."""
        if self.applied_at is None or name not in self.phases:
            return None
        return self.applied_at + self.phases[name]


def append_fault(folder: Path, record: FaultRecord) -> None:
    with (folder / FAULTS_JSONL).open("a") as f:
        f.write(record.model_dump_json() + "\n")


def read_faults(folder: Path) -> list[FaultRecord]:
    """The run folder's fault records, in the scenario's order (none without the file)."""
    path = folder / FAULTS_JSONL
    if not path.exists():
        return []
    out = [FaultRecord.model_validate(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return sorted(out, key=lambda r: r.index)
