"""Configuration of the load generator: SLA classes, length distributions and arrival processes.

Part of the scenario file (`classes:` and `load:`); the loadgen package owns these schemas.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RAY_WORKER_CPUS = 1.0  # what each load generator worker reserves when it runs as a Ray actor


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLO(_Strict):
    """Per-request latency objectives of a class, and the share of requests that must meet them.

    A request meets its SLO when its TTFT, its mean TPOT and its E2E latency are each within the
    targets given. `attainment` is the fraction of requests that must meet it: "p99 TTFT ≤ 450 ms"
    is `ttft_ms: 450, attainment: 0.99`.
    """

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    attainment: float = Field(default=0.9, gt=0, le=1)

    @model_validator(mode="after")
    def _at_least_one(self) -> "SLO":
        if self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None:
            raise ValueError("give at least one of ttft_ms, tpot_ms, e2e_ms")
        return self

    def met(self, ttft_s: float | None, tpot_s: float | None, e2e_s: float | None) -> bool:
        """Whether one finished request met this SLO: the one judgment every part of Parallax uses.

        Times are seconds on the engine's clock. Each target given is met when the value, in ms, is at
        most the target (equal meets). A request without a TTFT or an E2E produced no answer: it misses.
        A missing TPOT (fewer than two output tokens: no gap to time) meets the TPOT target. Whether the
        request ended well is the caller's to check: a failed request meets no SLO.
        """
        if ttft_s is None or e2e_s is None:
            return False
        return all(target is None or value is None or value * 1000 <= target
                   for value, target in ((ttft_s, self.ttft_ms), (tpot_s, self.tpot_ms), (e2e_s, self.e2e_ms)))

    def attained(self, attainment: float | None) -> bool:
        """Whether a share of requests meeting the SLO reaches the class's attainment target."""
        return attainment is not None and attainment >= self.attainment


class FixedLength(_Strict):
    kind: Literal["fixed"] = "fixed"
    value: int = Field(gt=0)


class UniformLength(_Strict):
    kind: Literal["uniform"] = "uniform"
    min: int = Field(gt=0)
    max: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "UniformLength":
        if self.max < self.min:
            raise ValueError("max must be ≥ min")
        return self


class NormalLength(_Strict):
    kind: Literal["normal"] = "normal"
    mean: float = Field(gt=0)
    std: float = Field(ge=0)
    min: int = Field(default=1, gt=0)
    max: int | None = Field(default=None, gt=0)


class LognormalLength(_Strict):
    """Lognormal with the given mean (tokens) and `sigma` of the underlying normal."""

    kind: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0)
    sigma: float = Field(gt=0)
    min: int = Field(default=1, gt=0)
    max: int | None = Field(default=None, gt=0)


class EmpiricalLength(_Strict):
    """Lengths drawn from a file of integers (one per line, or a CSV/JSONL column)."""

    kind: Literal["empirical"] = "empirical"
    path: Path
    column: str | None = None


class PresetLength(_Strict):
    """The average lengths of a dataset used by the study (see PRESETS)."""

    kind: Literal["preset"] = "preset"
    name: Literal["longalpaca", "short-mix-70b", "mlperf-summarization-405b", "short-mix-405b"]


LengthDist = Annotated[
    FixedLength | UniformLength | NormalLength | LognormalLength | EmpiricalLength | PresetLength,
    Field(discriminator="kind"),
]

# (mean input tokens, mean output tokens) of the study's datasets (arXiv 2603.05692).
PRESETS: dict[str, tuple[int, int]] = {
    "longalpaca": (9092, 208),
    "short-mix-70b": (106, 26),
    "mlperf-summarization-405b": (9428, 684),
    "short-mix-405b": (89, 20),
}


class PoissonArrival(_Strict):
    kind: Literal["poisson"] = "poisson"
    rate: float = Field(default=1.0, gt=0, description="requests per second")


class GammaArrival(_Strict):
    """Gamma inter-arrival times; burstiness = squared coefficient of variation (1 = Poisson)."""

    kind: Literal["gamma"] = "gamma"
    rate: float = Field(default=1.0, gt=0)
    burstiness: float = Field(default=1.0, gt=0)


class ConstantArrival(_Strict):
    kind: Literal["constant"] = "constant"
    rate: float = Field(default=1.0, gt=0)


class ClosedLoop(_Strict):
    """A fixed number of users, each sending its next request when the previous one ends."""

    kind: Literal["closed"] = "closed"
    concurrency: int = Field(default=1, gt=0)


class RampArrival(_Strict):
    """Poisson arrivals whose rate moves linearly from `start_rate` to `end_rate` over the run."""

    kind: Literal["ramp"] = "ramp"
    start_rate: float = Field(gt=0)
    end_rate: float = Field(gt=0)


class Step(_Strict):
    at_s: float = Field(ge=0)
    rate: float = Field(gt=0)


class StepArrival(_Strict):
    """Poisson arrivals whose rate changes at given times."""

    kind: Literal["steps"] = "steps"
    steps: list[Step] = Field(min_length=1)


class TraceArrival(_Strict):
    """Replay of a timestamped trace (CSV or JSONL: timestamp, input tokens, output tokens, class)."""

    kind: Literal["trace"] = "trace"
    path: Path
    time_scale: float = Field(default=1.0, gt=0, description="multiply the trace's gaps by this")


Arrival = Annotated[
    PoissonArrival | GammaArrival | ConstantArrival | ClosedLoop | RampArrival | StepArrival | TraceArrival,
    Field(discriminator="kind"),
]


class TrafficClass(_Strict):
    """One SLA class of traffic."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    share: float = Field(gt=0, le=1, description="fraction of requests in this class")
    slo: SLO
    input: LengthDist
    output: LengthDist
    arrival: Arrival | None = Field(
        default=None,
        description="this class's own arrival process (e.g. so its rate can step up alone); "
        "classes without one share load.arrival, split by their shares",
    )


# The arrival processes a phase schedule runs at each phase's rate (the ones with a single rate).
PHASE_ARRIVALS = ("poisson", "gamma", "constant")


class LoadPhase(_Strict):
    """One phase of a load schedule: its own total rate and class mix, for `duration_s`.

    `shares` gives each class's fraction of the phase's requests (each > 0, summing to 1, as the classes'
    own shares do); a class the phase does not name sends nothing in it. The arrival process is
    `load.arrival`'s kind at the phase's rate.
    """

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=64,
                             description="default: phase-N (N from 1)")
    duration_s: float = Field(gt=0, description="seconds of wall time the phase lasts")
    rate: float = Field(gt=0, description="requests/s of all classes together (wall clock, as load.rates)")
    shares: dict[str, float] = Field(min_length=1, description="CLASS: fraction of the phase's requests")

    @model_validator(mode="after")
    def _shares(self) -> "LoadPhase":
        bad = [k for k, v in self.shares.items() if not v > 0]
        if bad:
            raise ValueError(f"shares of {', '.join(bad)} must be > 0; leave a class out to send none of it")
        total = sum(self.shares.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"shares sum to {total:g}, not 1; adjust them")
        return self


class LoadConfig(_Strict):
    """How traffic is offered: an arrival process, optionally swept over several rates, or a schedule of
    phases each with its own rate and class mix (`phases`)."""

    arrival: Arrival = Field(default_factory=PoissonArrival)
    rates: list[float] = Field(
        default_factory=list,
        description="sweep: run the arrival process at each rate (or concurrency) in turn",
    )
    duration_s: float = Field(default=30.0, gt=0, description="length of each sweep step")
    phases: list[LoadPhase] = Field(
        default_factory=list,
        description="a schedule: each phase runs load.arrival's kind at its own rate and class mix, one after "
        "the other (instead of load.rates and duration_s); records name the phase that sent them",
    )
    warmup_s: float = Field(default=0.0, ge=0)
    timeout_s: float = Field(default=120.0, gt=0, description="per-request timeout")
    seed: int = 0
    workers: int = Field(
        default=1, ge=1, le=256,
        description="load generator workers sharing the schedule: worker k sends requests k, k+N, k+2N … "
        "(and closed-loop users k, k+N …); records, summary and /metrics are merged",
    )
    workers_on: Literal["local", "ray"] = Field(
        default="local", description="local: processes on this machine; ray: Ray actors spread over the "
        "nodes of the cluster in RAY_ADDRESS (or the one `parallax run` uses)",
    )

    @property
    def ray_cpus(self) -> float:
        """CPUs the load generator's Ray actors reserve on the cluster (none for local workers)."""
        return self.workers * RAY_WORKER_CPUS if self.workers_on == "ray" else 0.0

    @model_validator(mode="after")
    def _positive_rates(self) -> "LoadConfig":
        if any(r <= 0 for r in self.rates):
            raise ValueError("every rate in the sweep must be > 0")
        return self

    @model_validator(mode="after")
    def _phases(self) -> "LoadConfig":
        """A schedule replaces the sweep: its phases give the rates and the durations."""
        if not self.phases:
            return self
        if self.rates:
            raise ValueError("phases and rates: each phase has its own rate; remove load.rates (or load.phases)")
        # (compared with the defaults, not with what the file set: a run folder's scenario.yaml writes them all)
        if self.duration_s != type(self).model_fields["duration_s"].default:
            raise ValueError("phases and duration_s: each phase has its own duration_s; remove load.duration_s")
        if self.arrival.kind not in PHASE_ARRIVALS:
            raise ValueError(f"phases run load.arrival at each phase's rate: use a {', '.join(PHASE_ARRIVALS)} "
                             f"arrival, not {self.arrival.kind}")
        if getattr(self.arrival, "rate", None) != type(self.arrival).model_fields["rate"].default:
            raise ValueError("phases and arrival.rate: each phase has its own rate; remove load.arrival.rate")
        names = self.phase_names
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"phase names {', '.join(dup)} are used twice; give each phase its own name")
        return self

    @property
    def planned_s(self) -> float:
        """Wall seconds the load is planned to last, warm-up included (a trace's own length aside)."""
        if self.phases:
            return self.warmup_s + sum(p.duration_s for p in self.phases)
        return self.warmup_s + max(1, len(self.rates)) * self.duration_s

    @property
    def phase_names(self) -> list[str]:
        """Each phase's name: its own, else phase-N (N from 1)."""
        return [p.name or f"phase-{i + 1}" for i, p in enumerate(self.phases)]

    def phase_index(self, key: str) -> int:
        """The index of the phase named `key`, or numbered `key` (from 1); ValueError naming the choices."""
        names = self.phase_names
        if key in names:
            return names.index(key)
        if key.isdigit() and 1 <= int(key) <= len(names):
            return int(key) - 1
        choices = ", ".join(names) if names else "none: the load has no phases"
        raise ValueError(f"no phase {key!r}; give a phase's name or number (1 to {len(names)}): {choices}")


def schedule_problems(classes: Sequence[TrafficClass], load: LoadConfig) -> list[tuple[str, str]]:
    """What a phase schedule asks of the classes, as (field, problem and fix): its shares name classes, and no
    class brings an arrival of its own (each phase sets every class's rate)."""
    if not load.phases:
        return []
    names = [c.name for c in classes]
    problems = [(f"load.phases[{i}].shares", f"{k!r} is not a class; use one of {', '.join(names)}")
                for i, phase in enumerate(load.phases) for k in phase.shares if k not in names]
    problems += [(f"classes[{i}].arrival", "a phase schedule sets every class's rate (load.phases); remove this "
                  "class's arrival or load.phases") for i, c in enumerate(classes) if c.arrival is not None]
    return problems
