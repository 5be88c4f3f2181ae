"""The scoreboard: per (configuration, SLA class) figures over a sliding window, from PromQL.

The per-class figures are the recording rules' series (monitoring/rules.py, server side), the very
series the dashboards show: the controller acts on the numbers a user sees. Their rate window is the
rules' (`parallax run` writes them with the controller's `window_s`). Queue depth and KV-cache usage are
the engines' vLLM-named gauges. Errors also come from the load generator's client-side series, which see
failures the server cannot count (a replica that died mid-stream). `assemble` turns the answers into
`PairStats`; pure apart from the query callable. `read_traffic` gives each class's traffic itself (arrival
rate, request lengths), every configuration together.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from monitoring import metrics as m
from monitoring import rules as r
from monitoring.duration import prometheus_duration
from schema.deployment import ParallelConfig
from schema.scenario import Scenario

Labels = Mapping[str, str]
Sample = tuple[Labels, float]
Query = Callable[[str], Sequence[Sample]]

QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class Quantiles:
    """Percentiles: of a latency in seconds, or of a length in tokens (None where the window holds no data)."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def at(self, q: float) -> float | None:
        """The stored percentile nearest above q (p99 for q > 0.9)."""
        if q <= 0.5:
            return self.p50
        return self.p90 if q <= 0.9 else self.p99


@dataclass(frozen=True)
class PairStats:
    """What one configuration did for one SLA class over the window."""

    config: str
    sla_class: str
    samples: int = 0                   # requests that ended in the window (any status)
    request_rate: float = 0.0          # requests/s that ended, any status
    error_rate: float = 0.0            # share of them that failed (server or client side, the larger)
    attainment: float | None = None    # share of them that met the class's SLO (parallax:slo_attainment)
    goodput: float = 0.0               # requests/s that met the class's SLO
    output_tps: float = 0.0            # output tokens/s
    output_tps_per_gpu: float = 0.0
    ttft: Quantiles = field(default_factory=Quantiles)
    tpot: Quantiles = field(default_factory=Quantiles)
    e2e: Quantiles = field(default_factory=Quantiles)
    queue_depth: float | None = None   # waiting requests of the configuration (all classes)
    kv_usage: float | None = None      # KV-cache usage of the configuration, 0..1

    def flat(self) -> dict[str, object]:
        """One flat row (for CSV)."""
        out: dict[str, object] = {}
        for k, v in asdict(self).items():
            if isinstance(v, dict):
                out.update({f"{k}_{q}": x for q, x in v.items()})
            else:
                out[k] = v
        return out


@dataclass(frozen=True)
class Scoreboard:
    """All pairs at one moment; `stale` when Prometheus could not be read."""

    time: float
    pairs: dict[tuple[str, str], PairStats]
    stale: bool = False
    error: str | None = None

    def pair(self, config: str, sla_class: str) -> PairStats:
        return self.pairs.get((config, sla_class), PairStats(config, sla_class))


def scoreboard_rules(s: Scenario, configs: Sequence[ParallelConfig] | None = None) -> dict[str, Any]:
    """The recording rules a scenario's scoreboard reads: its configurations (or `configs`, the ones serving
    now once a re-partition changed them), at the controller's window, evaluated at the scrape interval. Load
    them into the Prometheus the controller queries."""
    return r.recording_rules(s.configurations if configs is None else configs,
                             prometheus_duration(s.controller.window_s), s.monitoring.scrape_interval_s)


def _recorded(record: str, source: str = "server", **labels: str) -> str:
    """A recording rule's series of one source, e.g. `parallax:slo_attainment{source="server"}`."""
    selector = ", ".join(f'{k}="{v}"' for k, v in {"source": source, **labels}.items())
    return f"{record}{{{selector}}}"


def build_queries(engine_prefix: str = "ray_vllm_") -> dict[str, str]:
    """The PromQL of every scoreboard field, keyed by field name."""
    q: dict[str, str] = {
        "rate": _recorded(r.REQUEST_RATE),
        "error_ratio": _recorded(r.ERROR_RATIO),
        "attainment": _recorded(r.SLO_ATTAINMENT),
        "goodput": _recorded(r.GOODPUT),
        "tokens": _recorded(r.OUTPUT_TOKENS_RATE),
        "tokens_per_gpu": _recorded(r.OUTPUT_TOKENS_PER_GPU),
        "client_rate": _recorded(r.REQUEST_RATE, "client"),
        "client_error_ratio": _recorded(r.ERROR_RATIO, "client"),
        "queue": f"sum by (config) ({engine_prefix}{m.NUM_REQUESTS_WAITING})",
        "kv": f"avg by (config) ({engine_prefix}{m.KV_CACHE_USAGE})",
    }
    for metric, record in (("ttft", r.TTFT), ("tpot", r.TPOT), ("e2e", r.E2E)):
        for p in QUANTILES:
            q[f"{metric}_p{round(p * 100)}"] = _recorded(record, quantile=f"{p:g}")
    return q


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def assemble(answers: Mapping[str, Sequence[Sample]], now: float, window_s: float = 0.0) -> Scoreboard:
    """Build a scoreboard from the answers to `build_queries` (pure); `window_s` is the rules' rate window."""
    per_pair: dict[tuple[str, str], dict[str, float]] = {}
    per_config: dict[str, dict[str, float]] = {}
    for key, samples in answers.items():
        for labels, value in samples:
            cfg = labels.get("config")
            if cfg is None:
                continue
            if key in ("queue", "kv"):
                per_config.setdefault(cfg, {})[key] = value
            elif "sla_class" in labels:
                per_pair.setdefault((cfg, labels["sla_class"]), {})[key] = value
    pairs = {}
    for (cfg, cls), v in per_pair.items():
        rate = v.get("rate", 0.0)
        client_rate = v.get("client_rate", 0.0)
        error_rate = max(_finite(v.get("error_ratio", 0.0)) or 0.0, _finite(v.get("client_error_ratio", 0.0)) or 0.0)

        def quant(name: str, v: dict[str, float] = v) -> Quantiles:
            return Quantiles(*(_finite(v[f"{name}_p{round(p * 100)}"]) if f"{name}_p{round(p * 100)}" in v
                               else None for p in QUANTILES))

        pairs[(cfg, cls)] = PairStats(
            config=cfg, sla_class=cls,
            samples=round(max(rate, client_rate) * window_s),
            request_rate=rate,
            error_rate=min(1.0, error_rate),
            attainment=_finite(v["attainment"]) if "attainment" in v else None,
            goodput=v.get("goodput", 0.0),
            output_tps=v.get("tokens", 0.0),
            output_tps_per_gpu=v.get("tokens_per_gpu", 0.0),
            ttft=quant("ttft"), tpot=quant("tpot"), e2e=quant("e2e"),
            queue_depth=per_config.get(cfg, {}).get("queue"),
            kv_usage=per_config.get(cfg, {}).get("kv"),
        )
    return Scoreboard(time=now, pairs=pairs)


def collect(query: Query, window_s: float, now: float, engine_prefix: str = "ray_vllm_") -> Scoreboard:
    """Run every scoreboard query and assemble the answers; exceptions of `query` propagate."""
    answers = {key: query(promql) for key, promql in build_queries(engine_prefix).items()}
    return assemble(answers, now, window_s)


@dataclass(frozen=True)
class Lengths:
    """A class's request lengths in tokens over the window."""

    mean: float | None = None
    quantiles: Quantiles = field(default_factory=Quantiles)


@dataclass(frozen=True)
class ClassTraffic:
    """What one class's traffic was over the window, every configuration together (the recording rules'
    parallax:class_* series): what a controller forecasts and plans for."""

    sla_class: str
    rate: float = 0.0                                   # requests/s arriving, on the engine's clock
    prompt_tokens: Lengths = field(default_factory=Lengths)
    output_tokens: Lengths = field(default_factory=Lengths)   # of the requests that ended ok


def traffic_queries() -> dict[str, str]:
    """The PromQL of every traffic field, keyed by field name."""
    q = {"rate": _recorded(r.CLASS_ARRIVAL_RATE), "prompt_mean": _recorded(r.CLASS_PROMPT_TOKENS_MEAN),
         "output_mean": _recorded(r.CLASS_OUTPUT_TOKENS_MEAN)}
    for key, record in (("prompt", r.CLASS_PROMPT_TOKENS), ("output", r.CLASS_OUTPUT_TOKENS)):
        for p in QUANTILES:
            q[f"{key}_p{round(p * 100)}"] = _recorded(record, quantile=f"{p:g}")
    return q


def assemble_traffic(answers: Mapping[str, Sequence[Sample]], time_scale: float = 1.0) -> dict[str, ClassTraffic]:
    """Per class, from the answers to `traffic_queries` (pure); `time_scale` (wall seconds per engine second,
    `EngineConfig.clock_scale`) puts the rate on the engine's clock."""
    per_class: dict[str, dict[str, float]] = {}
    for key, samples in answers.items():
        for labels, value in samples:
            if "sla_class" in labels and math.isfinite(value):
                per_class.setdefault(labels["sla_class"], {})[key] = value

    def lengths(v: dict[str, float], key: str) -> Lengths:
        return Lengths(v.get(f"{key}_mean"), Quantiles(*(v.get(f"{key}_p{round(p * 100)}") for p in QUANTILES)))
    return {cls: ClassTraffic(cls, v.get("rate", 0.0) * time_scale, lengths(v, "prompt"), lengths(v, "output"))
            for cls, v in per_class.items()}


def read_traffic(query: Query, time_scale: float = 1.0) -> dict[str, ClassTraffic]:
    """Each class's arrival rate (engine clock) and request lengths over the rules' window; exceptions of `query`
    propagate."""
    return assemble_traffic({key: query(promql) for key, promql in traffic_queries().items()}, time_scale)


@dataclass(frozen=True)
class FrontierPoint:
    config: str
    throughput: float   # output tokens/s per GPU
    latency: float      # seconds (lower is better)


def pareto_frontier(points: Sequence[FrontierPoint]) -> list[FrontierPoint]:
    """The points no other point beats on both throughput (higher) and latency (lower), by throughput."""
    front = [
        p for p in points
        if not any(o.throughput >= p.throughput and o.latency <= p.latency
                   and (o.throughput > p.throughput or o.latency < p.latency) for o in points)
    ]
    return sorted(front, key=lambda p: p.throughput)


def config_points(board: Scoreboard, latency: str = "e2e", q: float = 0.9) -> list[FrontierPoint]:
    """Per configuration: its output tokens/s per GPU (all classes) and its worst class's latency."""
    tput: dict[str, float] = {}
    lat: dict[str, float] = {}
    for (cfg, _), p in board.pairs.items():
        tput[cfg] = tput.get(cfg, 0.0) + p.output_tps_per_gpu
        value = getattr(p, latency).at(q)
        if value is not None:
            lat[cfg] = max(lat.get(cfg, 0.0), value)
    return [FrontierPoint(c, tput[c], lat[c]) for c in tput if c in lat]
