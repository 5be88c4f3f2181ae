"""The scenario's `faults:` section: timed actions `parallax run` applies while the load runs, so that what
each split loses when hardware fails is measured (the report's "Faults" section).

Each fault is `{at_s, action, target}` plus what its action needs. Times are wall seconds from the start
of the load's schedule (its warm-up included), as `load.duration_s` is. What a fault may aim at depends on
the rest of the scenario (its configurations, engine, load and monitoring): `fault_problems` checks that,
one (field, problem and fix) per problem, and `deployments.resolve` reports them with the others.
"""

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schema.deployment import DeploymentSpec
from schema.monitoring import MonitoringConfig
from schema.traffic import LoadConfig, TrafficClass

FaultAction = Literal["kill_replica", "kill_worker", "restart_prometheus", "pause_controller", "slow_gpu",
                      "kill_load_worker"]

# The actions aimed at one configuration (`target`), and the ones that reach into a replica's engine.
CONFIG_ACTIONS = ("kill_replica", "kill_worker", "slow_gpu")
ENGINE_ACTIONS = ("kill_worker", "slow_gpu")
TIMED_ACTIONS = ("pause_controller", "slow_gpu")   # they last `duration_s`


class Fault(BaseModel):
    """One timed action. `replica` picks a configuration's replica (0: the longest running), `rank` one GPU
    of it (rank = pipeline stage × tp + TP rank, as vLLM numbers its workers), `worker` a load generator
    worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at_s: float = Field(ge=0, description="wall seconds after the load's schedule starts (warm-up included)")
    action: FaultAction
    target: str | None = Field(default=None, description="the configuration it hits (kill_replica, kill_worker, "
                               "slow_gpu)")
    replica: int = Field(default=0, ge=0, description="which replica of the target: 0 = the longest running")
    rank: int = Field(default=0, ge=0, description="kill_worker, slow_gpu: which GPU of the replica, "
                      "0 … tp×pp−1")
    worker: int = Field(default=0, ge=0, description="kill_load_worker: which load generator worker")
    duration_s: float | None = Field(default=None, gt=0, description="pause_controller, slow_gpu: how long "
                                     "(wall seconds)")
    factor: float | None = Field(default=None, gt=0, lt=1, description="slow_gpu: the rank's speed as a "
                                 "fraction of its own (0.5: every kernel takes twice as long)")

    @model_validator(mode="after")
    def _fields_of_the_action(self) -> "Fault":
        a = self.action
        if a in CONFIG_ACTIONS and self.target is None:
            raise ValueError(f"{a} hits one configuration: add target: NAME")
        if a not in CONFIG_ACTIONS and self.target is not None:
            raise ValueError(f"{a} hits no configuration: remove target")
        if a in TIMED_ACTIONS and self.duration_s is None:
            raise ValueError(f"{a} lasts a while: add duration_s")
        if a not in TIMED_ACTIONS and self.duration_s is not None:
            raise ValueError(f"{a} is instantaneous (what follows is measured): remove duration_s")
        if (a == "slow_gpu") != (self.factor is not None):
            raise ValueError("slow_gpu needs factor (the rank's speed, 0 < factor < 1)" if a == "slow_gpu"
                             else f"factor belongs to slow_gpu, not {a}: remove it")
        for name, actions in (("replica", CONFIG_ACTIONS), ("rank", ENGINE_ACTIONS), ("worker", ("kill_load_worker",))):
            if getattr(self, name) != 0 and a not in actions:   # 0, the default, reads the same written out
                raise ValueError(f"{name} does not apply to {a}: remove it")
        return self

    @property
    def ends_s(self) -> float:
        """When its own action is over (its effects are measured beyond)."""
        return self.at_s + (self.duration_s or 0.0)

    def label(self) -> str:
        """A short name: `kill_replica tp8[0]`, `slow_gpu tp4pp2[0] rank 3 ×0.5`, `pause_controller`."""
        where = f" {self.target}[{self.replica}]" if self.target is not None else ""
        if self.action in ENGINE_ACTIONS:
            where += f" rank {self.rank}"
        if self.action == "kill_load_worker":
            where += f" {self.worker}"
        return f"{self.action}{where}" + (f" ×{self.factor:g}" if self.factor is not None else "")


Problems = list[tuple[str, str]]


def fault_problems(faults: Sequence[Fault], spec: DeploymentSpec, classes: Sequence[TrafficClass],
                   load: LoadConfig, monitoring: MonitoringConfig) -> Problems:
    """What the faults ask of the rest of the scenario: a target that is a configuration with that replica and
    rank, a time within the run, an action the engine, the load and the monitoring can take."""
    problems: Problems = []
    configs = {c.name: c for c in spec.configurations}
    names = ", ".join(configs) or "none: add configurations"
    class_names = {c.name for c in classes}
    timed = not any(getattr(a, "kind", None) == "trace" for a in (load.arrival, *(c.arrival for c in classes)))
    for i, f in enumerate(faults):
        at = f"faults[{i}]"
        c = configs.get(f.target) if f.target is not None else None
        if f.target is not None and c is None:
            what = "an SLA class, not a configuration" if f.target in class_names else "not a configuration"
            problems.append((f"{at}.target", f"{f.target!r} is {what}; {f.action} hits one of: {names}"))
        if c is not None and f.replica >= c.replicas:
            problems.append((f"{at}.replica", f"{c.name} has {c.replicas} replica(s); give 0 to {c.replicas - 1}"))
        if c is not None and f.action in ENGINE_ACTIONS:
            if f.action == "kill_worker" and c.gpus_per_replica == 1:
                problems.append((f"{at}.action", f"{c.name} runs each replica on one GPU: its only worker is the "
                                 "replica; use kill_replica"))
            elif f.rank >= c.gpus_per_replica:
                problems.append((f"{at}.rank", f"{c.name} has {c.gpus_per_replica} GPUs per replica (tp{c.tp}×"
                                 f"pp{c.pp}); give a rank from 0 to {c.gpus_per_replica - 1}"))
        if f.action == "slow_gpu" and spec.engine.kind != "sim":
            problems.append((f"{at}.action", f"slow_gpu slows a simulated GPU; engine.kind is {spec.engine.kind}, "
                             "whose GPUs cannot be slowed from here: use engine kind sim, or remove this fault"))
        if f.action == "kill_load_worker" and load.workers == 1:
            problems.append((f"{at}.action", "the load runs in this process, without workers (load.workers: 1): set "
                             "load.workers ≥ 2, or remove this fault"))
        elif f.action == "kill_load_worker" and f.worker >= load.workers:
            problems.append((f"{at}.worker", f"load.workers is {load.workers}; give a worker from 0 to "
                             f"{load.workers - 1}"))
        if f.action == "restart_prometheus" and monitoring.prometheus_url:
            problems.append((f"{at}.action", "the run attaches to your Prometheus (monitoring.prometheus_url) and "
                             "restarts only one of its own: remove prometheus_url, or this fault"))
        if timed and f.at_s >= load.planned_s:
            problems.append((f"{at}.at_s", f"{f.label()} at {f.at_s:g} s is beyond the run: its load lasts "
                             f"{load.planned_s:g} s (warm-up + steps × duration_s); give an earlier at_s"))
        elif timed and f.ends_s > load.planned_s:
            problems.append((f"{at}.duration_s", f"{f.label()} ends at {f.ends_s:g} s, beyond the run: its load "
                             f"lasts {load.planned_s:g} s; give a shorter duration_s or an earlier at_s"))
    return problems
