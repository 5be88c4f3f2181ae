"""Published serving figures (vendor tables, MLPerf results, your own notes): one measured figure per
row, as CSV (schema in the README) or as a YAML list (bench/data/*.yaml), read into observations.

A row says what ran (model, GPU, dtype, TP/PP/replicas, engine knobs), the workload (input/output
lengths and the load: every request queued at once, C users, a Poisson rate, or MLPerf's Server mode
held to a measured TPOT), the figure (metric, statistic, value) and how to predict it: `fluid`
(steady_state.py, fast) or `sched` (the simulator itself). Rows that describe the same experiment
share one prediction.
"""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deployments.catalog.files import read_text, read_yaml
from deployments.catalog.gpus import resolve_gpu
from deployments.catalog.models import resolve_model
from deployments.engines.sim.measurements import Metric, Observation, ServingRun, Setup, SteadyRun
from deployments.engines.sim.offline import RequestSpec
from deployments.engines.sim.workload import fixed_workload
from schema.deployment import EngineConfig
from schema.dtypes import Dtype, parse_dtype

_METRICS: dict[tuple[str, str], Metric] = {
    ("output_tokens_per_s", "mean"): Metric.output_tokens_per_s,
    ("output_tokens_per_s", "median"): Metric.output_tokens_per_s,
    ("ttft_ms", "mean"): Metric.ttft_mean_s,
    ("ttft_ms", "median"): Metric.ttft_median_s,
    ("tpot_ms", "mean"): Metric.tpot_mean_s,
    ("tpot_ms", "median"): Metric.tpot_median_s,
    ("itl_ms", "mean"): Metric.itl_mean_s,
}


class PublishedPoint(BaseModel):
    """One published figure and the experiment that produced it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(default="", description="where it was published (page, date, software)")
    model: str = Field(description="catalog model or a path to a Hugging Face config.json")
    gpu: str = Field(description="catalog GPU or a path to a YAML GPU spec")
    dtype: Dtype
    kv_dtype: Dtype | None = Field(default=None, description="default: bf16 (fp32 for fp32 models)")
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    replicas: int = Field(default=1, gt=0, description="data-parallel copies (MLPerf: one per GPU)")
    isl: int = Field(gt=0, description="input tokens per request (the mean for a dataset)")
    osl: int = Field(gt=0, description="output tokens per request (the mean for a dataset)")
    load: Literal["max-throughput", "concurrency", "rate", "server"]
    concurrency: int | None = Field(default=None, gt=0)
    request_rate: float | None = Field(default=None, gt=0)
    server_tpot_ms: float | None = Field(default=None, gt=0, description="server: the measured mean TPOT it "
                                         "was held to")
    num_prompts: int | None = Field(default=None, gt=0, description="sched: requests of a finite benchmark, "
                                    "all counted (default: a steady run, see _experiment)")
    metric: Literal["output_tokens_per_s", "ttft_ms", "tpot_ms", "itl_ms"]
    statistic: Literal["mean", "median"] = "mean"
    value: float = Field(gt=0)
    estimator: Literal["fluid", "sched"] = "fluid"
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    fit: bool = Field(default=True, description="false: held out, only predicted")
    note: str = ""

    @model_validator(mode="before")
    @classmethod
    def _dtypes(cls, data: object) -> object:
        if isinstance(data, dict):
            data = {k: parse_dtype(v) if k in ("dtype", "kv_dtype") and isinstance(v, str) else v
                    for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _load_fields(self) -> "PublishedPoint":
        if self.load == "concurrency" and self.concurrency is None:
            raise ValueError("load: concurrency needs `concurrency` (users in the closed loop)")
        if self.load == "rate" and (self.request_rate is None or self.estimator != "sched"):
            raise ValueError("load: rate needs `request_rate` and estimator: sched")
        if self.load == "server" and (self.server_tpot_ms is None or self.estimator != "fluid"):
            raise ValueError("load: server needs `server_tpot_ms` (the measured mean TPOT) and estimator: fluid")
        if (self.metric, self.statistic) not in _METRICS:
            raise ValueError(f"metric {self.metric} has no {self.statistic}")
        return self

    @property
    def resolved_kv_dtype(self) -> Dtype:
        return self.kv_dtype or (Dtype.fp32 if self.dtype == Dtype.fp32 else Dtype.bf16)

    def experiment_key(self) -> tuple[object, ...]:
        """Rows with the same key describe one experiment (one prediction)."""
        return tuple(v for k, v in self.model_dump().items()
                     if k not in ("source", "metric", "statistic", "value", "fit", "note"))

    def label(self) -> str:
        split = f"TP{self.tp}" + (f"×PP{self.pp}" if self.pp > 1 else "") + (
            f"×{self.replicas}" if self.replicas > 1 else "")
        match self.load:
            case "concurrency":
                load = f"c={self.concurrency}"
            case "rate":
                load = f"{self.request_rate} req/s"
            case "server":
                load = f"server@{self.server_tpot_ms:g}ms"
            case _:
                load = "max load"
        return f"{self.model} {self.dtype.value} {split} {self.gpu} {self.isl}/{self.osl} {load}"


def _engine(p: PublishedPoint) -> EngineConfig:
    knobs = {k: v for k in ("max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization")
             if (v := getattr(p, k)) is not None}
    return EngineConfig(**knobs)


def _experiment(p: PublishedPoint, base_dir: Path | None) -> SteadyRun | ServingRun:
    setup = Setup(resolve_model(p.model, base_dir), resolve_gpu(p.gpu, base_dir), p.dtype, p.resolved_kv_dtype,
                  p.tp, p.pp, p.replicas, _engine(p))
    if p.estimator == "fluid":
        if p.load == "rate":
            raise AssertionError("validated: rate is sched only")
        return SteadyRun(setup, p.isl, p.osl, p.load, p.concurrency or 0,
                         (p.server_tpot_ms or 0.0) / 1e3)
    if p.load == "concurrency":
        c = p.concurrency or 1
        if p.num_prompts:   # a finite benchmark (vllm bench serve): every request counts
            return ServingRun(setup, tuple(RequestSpec(p.isl, p.osl) for _ in range(p.num_prompts)), c)
        # A steady loop: 5·C requests; the first wave starts together, it is warm-up.
        n = max(5 * c, 20)
        return ServingRun(setup, tuple(RequestSpec(p.isl, p.osl) for _ in range(n)), c, tuple(range(c, n)))
    if p.load == "server":
        raise AssertionError("validated: server is fluid only")
    n = p.num_prompts or (1000 if p.load == "max-throughput" else 200)
    return ServingRun(setup, tuple(fixed_workload(n, p.isl, p.osl, p.request_rate)))


def observations(points: Sequence[PublishedPoint], source: str, base_dir: Path | None = None) -> list[Observation]:
    """One observation per row; rows of one experiment share its prediction. ValueError names the row
    whose model / GPU / configuration cannot be used."""
    experiments: dict[tuple[object, ...], SteadyRun | ServingRun] = {}
    out = []
    for i, p in enumerate(points, start=1):
        key = p.experiment_key()
        if key not in experiments:
            try:
                experiments[key] = _experiment(p, base_dir)
            except ValueError as e:
                raise ValueError(f"{source}: row {i}: {e}") from None
        out.append(Observation(experiments[key], _METRICS[(p.metric, p.statistic)],
                               p.value / 1e3 if p.metric.endswith("_ms") else p.value,
                               f"{p.label()} {p.metric}", p.source, p.fit))
    return out


def _validate(rows: list[object], path: Path, where: str) -> list[PublishedPoint]:
    out = []
    for i, row in enumerate(rows, start=1):
        try:
            out.append(PublishedPoint.model_validate(row))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "(row)"
            msg = err["msg"].removeprefix("Value error, ")
            raise ValueError(f"{path}: {where} {i}: {field}: {msg}") from None
    return out


def read_points_csv(path: Path) -> list[PublishedPoint]:
    """Rows of a CSV with PublishedPoint's columns (empty cells: the default)."""
    text = read_text(path, "a CSV of published points")
    rows = [{k: v for k, v in r.items() if k and v not in (None, "")} for r in csv.DictReader(text.splitlines())]
    if not rows:
        raise ValueError(f"{path}: no rows; the README lists the columns of a published-points CSV")
    return _validate(list(rows), path, "row")


def read_points_yaml(path: Path) -> list[PublishedPoint]:
    """A YAML file `points: [{...}, ...]` of PublishedPoint mappings, with optional `defaults: {...}`
    that every point starts from."""
    raw = read_yaml(path, "a YAML file of published points")
    if not isinstance(raw, dict) or not isinstance(raw.get("points"), list):
        raise ValueError(f"{path}: expected a mapping `points: [{{model: ..., gpu: ..., ...}}, ...]`")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ValueError(f"{path}: defaults: expected a mapping of point fields")
    rows = [{**defaults, **r} if isinstance(r, dict) else r for r in raw["points"]]
    return _validate(rows, path, "point")
