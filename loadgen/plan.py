"""The workload plan: which request goes when, in which class, with which lengths (pure, seeded).

Traffic comes in streams. Classes without their own `arrival` share one stream driven by
`load.arrival` (each request picks its class by the classes' shares); a class with its own
`arrival` gets a stream of its own. A sweep (`load.rates`) runs the shared stream at each rate
in turn, `duration_s` per step; own-arrival streams repeat unchanged in every step. A phase schedule
(`load.phases`) makes each phase a step: the shared stream at the phase's rate, each request's class
drawn by the phase's shares, for the phase's `duration_s`; its requests name the phase. The first step
is preceded by `warmup_s` of the same traffic, whose records are flagged `warmup`. A trace replays
in full: when every stream is a trace, the step lasts as long as the trace (not `duration_s`).
Steps follow each other on one timeline: the next starts when the previous one's time is up, whatever
is still in flight.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadgen.arrivals import SWEEPABLE, ArrivalConfig, arrival_times, is_open_loop, mean_rate, with_rate
from loadgen.client import Planned
from loadgen.errors import LoadError
from loadgen.files import resolve_path
from loadgen.lengths import Sampler, make_sampler
from loadgen.trace import TraceRow, read_trace
from schema.traffic import ClosedLoop, LoadConfig, TraceArrival, TrafficClass, schedule_problems


@dataclass
class Stream:
    """One arrival process and the classes it feeds (with their relative weights)."""

    arrival: ArrivalConfig
    classes: list[str]
    weights: np.ndarray
    own: bool  # a class's own arrival (not swept)


@dataclass
class ClosedUsers:
    """A closed loop: `concurrency` users sending back to back for the step's duration (`users`: the ones
    this sender runs, all by default; a worker runs its share)."""

    concurrency: int
    stream: Stream
    users: tuple[int, ...] | None = None

    @property
    def user_ids(self) -> tuple[int, ...]:
        return self.users if self.users is not None else tuple(range(self.concurrency))


@dataclass
class StepPlan:
    index: int
    warmup_s: float
    duration_s: float                        # the measured part of the step
    offered_rate: float | None               # total requests/s of the open-loop streams
    class_rates: dict[str, float]            # requests/s offered per class (open loop)
    requests: list[Planned] = field(default_factory=list)   # open loop, at_s from the step's start
    closed: list[ClosedUsers] = field(default_factory=list)
    phase: str | None = None                 # the load phase this step is (load.phases), by name

    @property
    def length_s(self) -> float:
        return self.warmup_s + self.duration_s


class Workload:
    """Length samplers of every class; draws a request's class and lengths."""

    def __init__(self, classes: list[TrafficClass], base_dir: Path | None = None):
        if not classes:
            raise LoadError("no traffic classes; give a scenario with classes, or class flags")
        self.classes = {c.name: c for c in classes}
        self.samplers: dict[str, tuple[Sampler, Sampler]] = {
            c.name: (make_sampler(c.input, 0, base_dir), make_sampler(c.output, 1, base_dir)) for c in classes}

    def lengths(self, cls: str, rng: np.random.Generator) -> tuple[int, int]:
        inp, out = self.samplers[cls]
        return inp(rng), out(rng)

    def pick(self, stream: Stream, rng: np.random.Generator) -> str:
        if len(stream.classes) == 1:
            return stream.classes[0]
        return stream.classes[int(rng.choice(len(stream.classes), p=stream.weights))]


def streams(classes: list[TrafficClass], load: LoadConfig) -> list[Stream]:
    shared = [c for c in classes if c.arrival is None]
    out = []
    if shared:
        w = np.array([c.share for c in shared])
        out.append(Stream(load.arrival, [c.name for c in shared], w / w.sum(), own=False))
    out += [Stream(c.arrival, [c.name], np.ones(1), own=True) for c in classes if c.arrival is not None]
    return out


def _check(classes: list[TrafficClass], load: LoadConfig, sts: list[Stream]) -> None:
    problems = schedule_problems(classes, load)
    if problems:
        raise LoadError("; ".join(f"{where}: {what}" for where, what in problems))
    if load.rates and not any(not s.own for s in sts):
        raise LoadError("load.rates: every class has its own arrival, so there is no shared stream to sweep; "
                        "remove load.rates or an arrival override")
    if load.rates and load.arrival.kind not in SWEEPABLE:
        raise LoadError(f"load.rates: a sweep needs a {', '.join(SWEEPABLE)} arrival, not {load.arrival.kind}; "
                        "remove load.rates or change load.arrival.kind")


def build_plan(classes: list[TrafficClass], load: LoadConfig, workload: Workload,
               base_dir: Path | None = None) -> list[StepPlan]:
    """Every step of the run, with every open-loop request placed in time."""
    sts = streams(classes, load)
    _check(classes, load, sts)
    traces = {id(s): _trace(s.arrival, base_dir, workload) for s in sts if isinstance(s.arrival, TraceArrival)}
    plans = []
    for i, (rate, shares, phase_s, phase) in enumerate(_steps(load)):
        warm = load.warmup_s if i == 0 else 0.0
        trace_spans = [rows[-1].at_s * s.arrival.time_scale  # type: ignore[union-attr]
                       for s in sts if (rows := traces.get(id(s)))]
        duration = max(trace_spans) - warm if trace_spans and not any(
            not isinstance(s.arrival, TraceArrival) for s in sts) else phase_s
        duration = max(duration, 1e-3)
        step = StepPlan(i, warm, duration, None, {}, phase=phase)
        placed: list[tuple[float, int, str, int, int]] = []
        for k, s in enumerate(sts):
            if shares is not None:  # a phase's mix on the shared stream (a schedule has no other)
                s = Stream(s.arrival, s.classes, np.array([shares.get(c, 0.0) for c in s.classes]), s.own)
            arrival = with_rate(s.arrival, rate) if rate is not None and not s.own else s.arrival
            rng = np.random.default_rng([load.seed, i, k])
            if isinstance(arrival, ClosedLoop):
                step.closed.append(ClosedUsers(arrival.concurrency, Stream(arrival, s.classes, s.weights, s.own)))
                continue
            if isinstance(arrival, TraceArrival):
                items = _trace_requests(traces[id(s)], arrival.time_scale, s, workload, rng)
                for cls in {it[1] for it in items}:
                    step.class_rates[cls] = step.class_rates.get(cls, 0.0) + sum(
                        it[1] == cls for it in items) / step.length_s
            else:
                assert is_open_loop(arrival)
                times = arrival_times(arrival, step.length_s, rng)
                items = []
                for t in times:
                    cls = workload.pick(s, rng)
                    items.append((float(t), cls, *workload.lengths(cls, rng)))
                total_rate = mean_rate(arrival, step.length_s) or 0.0
                for cls, w in zip(s.classes, s.weights, strict=True):
                    step.class_rates[cls] = step.class_rates.get(cls, 0.0) + total_rate * float(w)
            placed += [(t, k, cls, n_in, n_out) for t, cls, n_in, n_out in items]
        placed.sort(key=lambda x: x[0])
        step.requests = [Planned(request_id=f"s{i}-{k}-{n:07d}", at_s=t, sla_class=cls, prompt_tokens=n_in,
                                 max_tokens=n_out, rate_step=i, offered_rate=step.class_rates[cls], warmup=t < warm,
                                 phase=phase)
                         for n, (t, k, cls, n_in, n_out) in enumerate(placed)]
        if step.class_rates:
            step.offered_rate = sum(step.class_rates.values())
        plans.append(step)
    return plans


def _steps(load: LoadConfig) -> list[tuple[float | None, dict[str, float] | None, float, str | None]]:
    """Each step's (shared stream's rate, class shares, duration, phase name): the phases of a schedule, else
    the sweep's rates (None: the arrival's own rate and the classes' own shares)."""
    if load.phases:
        return [(p.rate, p.shares, p.duration_s, name) for p, name in zip(load.phases, load.phase_names, strict=True)]
    rates: list[float | None] = list(load.rates) or [None]
    return [(rate, None, load.duration_s, None) for rate in rates]


def _trace(arrival: ArrivalConfig, base_dir: Path | None, workload: Workload) -> list[TraceRow]:
    assert isinstance(arrival, TraceArrival)
    path = resolve_path(arrival.path, base_dir)
    rows = read_trace(path)
    known = workload.classes
    for n, r in enumerate(rows):
        if r.sla_class is not None and r.sla_class not in known:
            raise LoadError(f"{path}: request {n + 1}: field 'class': {r.sla_class!r} is not a class of the "
                            f"scenario; use one of {', '.join(known)}")
    return rows


def _trace_requests(rows: list[TraceRow], scale: float, s: Stream, workload: Workload,
                    rng: np.random.Generator) -> list[tuple[float, str, int, int]]:
    out = []
    for r in rows:
        cls = s.classes[0] if s.own else (r.sla_class or workload.pick(s, rng))
        out.append((r.at_s * scale, cls, r.input_tokens, r.output_tokens))
    return out
