"""What was measured, and what the performance model predicts for it.

An `Observation` is one measured figure of one experiment. An experiment predicts all its figures at
once from a `Calibration` (one kernel cost, one steady-state estimate, or one simulation), so a fit
costs one prediction per experiment per trial. Three kinds:

- `KernelTiming`: one decoder layer's kernels of one kind, timed on one GPU (a profile), priced by the
  performance model's own cost terms;
- `SteadyRun`: the fluid estimate of a full engine (all requests queued, C users, or a server held to
  a time per output token), see steady_state.py;
- `ServingRun`: given requests through the simulator itself (scheduler + event core), in virtual time.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.calibration import Calibration
from deployments.engines.sim.offline import RequestRecord, RequestSpec, run_offline
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.steady_state import at_step_time, closed_loop, max_throughput
from deployments.engines.sim.work import BatchShape
from schema.deployment import EngineConfig
from schema.dtypes import Dtype


class Metric(StrEnum):
    """A measured figure, in SI units."""

    seconds = "seconds"                          # a kernel's time
    ttft_median_s = "ttft_median_s"
    ttft_mean_s = "ttft_mean_s"
    tpot_median_s = "tpot_median_s"
    tpot_mean_s = "tpot_mean_s"
    itl_mean_s = "itl_mean_s"                    # mean gap between tokens (token-weighted)
    output_tokens_per_s = "output_tokens_per_s"
    makespan_s = "makespan_s"                    # from the first arrival to the last finish (a batch's latency)

    @property
    def unit(self) -> str:
        """The unit a figure is shown in: µs for kernels, ms for latencies, tokens/s for throughput."""
        return {Metric.seconds: "µs", Metric.output_tokens_per_s: "tok/s"}.get(self, "ms")

    def shown(self, value: float) -> float:
        return value * {"µs": 1e6, "ms": 1e3}.get(self.unit, 1.0)


@dataclass(frozen=True)
class Setup:
    """What ran: a model in `dtype` (KV cache in `kv_dtype`) on TP×PP GPUs of one kind, `replicas`
    data-parallel copies, with the engine's scheduling knobs."""

    model: ModelSpec
    gpu: GpuSpec
    dtype: Dtype
    kv_dtype: Dtype
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)

    def factory(self, calibration: Calibration) -> ReplicaFactory:
        return ReplicaFactory(self.model, self.gpu, self.dtype, self.kv_dtype, self.tp, self.pp, self.engine,
                              calibration)

    def describe(self) -> str:
        split = f"TP{self.tp}" + (f"×PP{self.pp}" if self.pp > 1 else "") + (
            f"×{self.replicas}" if self.replicas > 1 else "")
        return f"{self.model.name} {self.dtype.value} {split} {self.gpu.name}"


class Experiment(Protocol):
    setup: Setup

    def predict(self, calibration: Calibration) -> dict[Metric, float]: ...


class KernelOp(StrEnum):
    gemm = "gemm"                            # the four GEMMs of one layer (QKV, O, gate/up, down) at M rows
    prefill_attention = "prefill_attention"  # causal attention of one prompt of `tokens` tokens
    decode_attention = "decode_attention"    # `tokens` sequences each reading `context` KV tokens
    stream = "stream"                        # element-wise / copy kernels moving `bytes` through HBM


@dataclass(frozen=True)
class KernelTiming:
    """One decoder layer's kernels of one kind on one GPU, priced by the performance model's cost terms
    (per layer), or, for a stream, by the achievable HBM bandwidth that defines `hbm_fraction`."""

    setup: Setup
    op: KernelOp
    tokens: int = 0
    context: int = 0
    bytes: float = 0.0

    def predict(self, calibration: Calibration) -> dict[Metric, float]:
        s = self.setup
        if self.op == KernelOp.stream:
            c = calibration.for_gpu(s.gpu)
            return {Metric.seconds: self.bytes / (s.gpu.hbm_bytes_per_s * c.hbm_fraction)}
        match self.op:
            case KernelOp.gemm:
                shape, term = BatchShape(prefill_tokens=self.tokens, prefill_seqs=1), "gemm"
            case KernelOp.prefill_attention:
                n = self.tokens
                shape, term = BatchShape(prefill_tokens=n, prefill_seqs=1, prefill_attn_pairs=n * (n + 1) / 2), \
                    "attention"
            case _:
                shape, term = BatchShape(decode_seqs=self.tokens, decode_context=self.tokens * self.context), \
                    "attention"
        perf = s.factory(calibration).cost_model
        return {Metric.seconds: perf.step(shape).terms[term] / s.model.num_layers}


SteadyLoad = Literal["max-throughput", "concurrency", "server"]


@dataclass(frozen=True)
class SteadyRun:
    """The fluid estimate of `replicas` full engines: every request queued at once (max throughput),
    `concurrency` users in a closed loop, or a server held to a mean time per output token `tpot_s`
    (MLPerf's Server mode, at its measured TPOT)."""

    setup: Setup
    isl: int
    osl: int
    load: SteadyLoad
    concurrency: int = 0
    tpot_s: float = 0.0

    def predict(self, calibration: Calibration) -> dict[Metric, float]:
        factory = self.setup.factory(calibration)
        r = self.setup.replicas
        if self.load == "max-throughput":
            est = max_throughput(factory, self.isl, self.osl)
        elif self.load == "server":
            est = at_step_time(factory, self.isl, self.osl, self.tpot_s)
        else:
            est = closed_loop(factory, max(1, round(self.concurrency / r)), self.isl, self.osl)
        out = {Metric.output_tokens_per_s: est.output_tokens_per_s * r, Metric.tpot_mean_s: est.step_s,
               Metric.tpot_median_s: est.step_s, Metric.itl_mean_s: est.step_s}
        if est.ttft_s == est.ttft_s:   # not NaN
            out |= {Metric.ttft_mean_s: est.ttft_s, Metric.ttft_median_s: est.ttft_s}
        return out


@dataclass(frozen=True)
class ServingRun:
    """`requests` through the simulated engine in virtual time: open loop at their arrival times, or a
    closed loop of `concurrency` users. Only the requests at indices `measured` (all when empty)
    count in the figures (the others are warm-up, or failed on the real server); a closed loop with
    its warm-up left out is a steady loop, whose throughput is Little's law's."""

    setup: Setup
    requests: tuple[RequestSpec, ...]
    concurrency: int | None = None
    measured: tuple[int, ...] = ()

    def predict(self, calibration: Calibration) -> dict[Metric, float]:
        res = run_offline(self.setup.factory(calibration), self.requests, self.setup.replicas, self.concurrency)
        recs = [res.records[i] for i in self.measured] if self.measured else res.records
        return figures(recs, res.makespan, self.concurrency if self.measured else None)


def figures(records: Sequence[RequestRecord], makespan: float, concurrency: int | None) -> dict[Metric, float]:
    """The figures of a set of (simulated) requests. Throughput: a steady closed loop's (`concurrency`
    given) by Little's law, users × mean output / mean E2E; otherwise output tokens over the makespan."""
    ttft = [r.ttft for r in records]
    tpot = [r.tpot for r in records if r.output_len > 1]
    out = sum(r.output_len for r in records)
    if concurrency:
        tps = concurrency * out / len(records) / statistics.fmean(r.e2e for r in records)
    else:
        tps = out / makespan if makespan > 0 else 0.0
    gaps = sum(r.finish - r.first_token for r in records)
    steps = sum(r.output_len - 1 for r in records)
    result = {Metric.ttft_median_s: statistics.median(ttft), Metric.ttft_mean_s: statistics.fmean(ttft),
              Metric.output_tokens_per_s: tps, Metric.makespan_s: makespan}
    if tpot:
        result |= {Metric.tpot_median_s: statistics.median(tpot), Metric.tpot_mean_s: statistics.fmean(tpot),
                   Metric.itl_mean_s: gaps / steps}
    return result


SourceKind = Literal["kernel", "serving"]


@dataclass(frozen=True, eq=False)
class Observation:
    """One measured figure of one experiment. `fit`: False for a figure held out of the fit (only
    predicted). Observations compare by identity: two equal measurements are two points."""

    experiment: KernelTiming | SteadyRun | ServingRun
    metric: Metric
    measured: float
    label: str
    source: str = ""
    fit: bool = True

    @property
    def kind(self) -> SourceKind:
        return "kernel" if isinstance(self.experiment, KernelTiming) else "serving"


def predict_all(observations: Sequence[Observation], calibration: Calibration) -> list[float]:
    """Predicted value of every observation; each experiment is predicted once."""
    cache: dict[int, dict[Metric, float]] = {}
    out = []
    for o in observations:
        key = id(o.experiment)
        if key not in cache:
            cache[key] = o.experiment.predict(calibration)
        values = cache[key]
        if o.metric not in values:
            raise ValueError(f"{o.label}: the {type(o.experiment).__name__} estimate has no {o.metric.value}")
        out.append(values[o.metric])
    return out
