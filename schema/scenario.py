"""The scenario file: the one description of an experiment, as pydantic models, and its parsing.

The bottom of the import graph: every package reads the scenario's models from here. Problems are
reported as `FILE: FIELD: what is wrong; the fix`, never as a traceback. What needs the catalog (model,
GPU, memory) or the files a scenario names is checked by `deployments.resolve`.
"""

import json
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ConfigDict, Field, ValidationError

from schema.controller import ControllerConfig
from schema.deployment import DeploymentSpec
from schema.faults import Fault
from schema.monitoring import MonitoringConfig
from schema.plan import PlanSection
from schema.traffic import PHASE_ARRIVALS, LoadConfig, TrafficClass


class Scenario(DeploymentSpec):
    """Deployment + traffic classes + load + controller + monitoring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    classes: list[TrafficClass] = Field(min_length=1)
    load: LoadConfig = Field(default_factory=LoadConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    plan: PlanSection | None = Field(default=None, description="written by `parallax plan`: the planned "
                                     "deployments the configurations make up, and what was predicted")
    faults: list[Fault] = Field(default_factory=list, description="timed actions `parallax run` applies while "
                                "the load runs (schema/faults.py), measured in the report's Faults section")

    @property
    def default_class(self) -> str:
        return self.server.default_class or self.classes[0].name

    def class_named(self, name: str) -> TrafficClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    def with_mix(self, shares: Mapping[str, float], rate: float) -> "Scenario":
        """This scenario offering `rate` requests/s (wall clock) of the classes in `shares` (the others left
        out) as one stream of load.arrival's kind: the traffic the planner plans for (a phase's, or a forecast's).
        ValueError when load.arrival has no single rate."""
        if self.load.arrival.kind not in PHASE_ARRIVALS:
            raise ValueError(f"load.arrival: a traffic mix runs at one rate; a {self.load.arrival.kind} arrival has "
                             f"none (use {', '.join(PHASE_ARRIVALS)})")
        classes = [c.model_copy(update={"share": shares[c.name], "arrival": None})
                   for c in self.classes if shares.get(c.name, 0.0) > 0]
        load = self.load.model_copy(update={"arrival": self.load.arrival.model_copy(update={"rate": rate}),
                                            "rates": [], "phases": []})
        default = self.server.default_class if any(c.name == self.server.default_class for c in classes) else None
        return self.model_copy(update={"classes": classes, "load": load,
                                       "server": self.server.model_copy(update={"default_class": default})})

    def phase_mix(self, index: int) -> "Scenario":
        """Phase `index` (from 0) of load.phases as a scenario of its own: its classes' shares, its rate."""
        phase = self.load.phases[index]
        return self.with_mix(phase.shares, phase.rate)

    def schedule_mix(self) -> "Scenario":
        """The whole phase schedule as one traffic mix: each class's share of all its requests, at its mean rate."""
        phases = self.load.phases
        sent = {c.name: sum(p.rate * p.duration_s * p.shares.get(c.name, 0.0) for p in phases) for c in self.classes}
        total = sum(sent.values())
        return self.with_mix({k: v / total for k, v in sent.items()}, total / sum(p.duration_s for p in phases))


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message lists every problem."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {field}: {msg}" for field, msg in problems]
        super().__init__("\n".join(lines))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"fixed", "uniform", "normal", "lognormal", "empirical", "preset", "poisson",
                      "gamma", "constant", "closed", "ramp", "steps", "trace", "ewma", "holt"}:
            continue  # discriminated-union tag: not a field the user wrote
        elif any(ch.isspace() and ch != " " for ch in part):
            out += f"[{json.dumps(part, ensure_ascii=False)}]"  # a key with a newline or tab, quoted
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _pydantic_problems(e: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in e.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif err["type"] == "missing":
            msg = "required field is missing; add it"
        # pydantic quotes the offending value: a line break in it must not break the one-line-per-problem form
        problems.append((_loc(err["loc"]), msg.encode("unicode_escape").decode("ascii") if not msg.isprintable()
                         else msg))
    return problems


def scenario_from_data(data: object, source: str = "<scenario>") -> Scenario:
    """The Scenario of already-loaded YAML data; ScenarioError lists every field problem."""
    if not isinstance(data, dict):
        raise ScenarioError(source, [("(top level)", "expected a mapping of scenario fields")])
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(source, _pydantic_problems(e)) from None


def read_scenario_data(path: Path) -> object:
    """The YAML data of a scenario file (safe_load); ScenarioError for a missing file or bad YAML."""
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ScenarioError(source, [("(file)", "no such file; check the path")]) from None
    except IsADirectoryError:
        raise ScenarioError(source, [("(file)", "is a folder; give a scenario .yaml file")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(e, "problem", None) or str(e)
        raise ScenarioError(source, [(where, f"YAML syntax error: {problem}")]) from None
