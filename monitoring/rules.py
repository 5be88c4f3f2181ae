"""Prometheus recording rules: per (configuration, SLA class) figures from server- and client-side metrics.

These rules are the one definition of each per-class figure: the dashboards, the controller's scoreboard
(controllers/scoreboard.py) and so the report's live scoreboard all read the recorded series. Every
recorded series carries the labels `config`, `sla_class` and `source` ("server" for the LLMServer
wrapper's `ray_parallax_*` metrics, "client" for the load generator's `parallax_client_*`). Latency
quantiles add a `quantile` label ("0.5", "0.9", "0.99").

SLO attainment is the share of the requests that ended in the window, whatever their status, that met
their class's SLO: a request that failed (error, abort, timeout) did not meet it. Goodput is the rate of
those that met it, so attainment = goodput / request rate.

The traffic itself, per class and summed over configurations (what a controller forecasts, labels
`sla_class` and `source="server"` only): the arrival rate (requests reaching the configurations, counted as
they arrive, not as they end), and the prompt and output lengths of the window's requests (prompts as they
arrive, outputs of the requests that ended ok): means from token counters, quantiles from histograms
(monitoring/metrics.py says why).

Output tokens per GPU needs each configuration's GPU count, replicas included. The `tp` / `pp`
labels cannot be multiplied in PromQL and the client side has no such labels, so the rules are
generated from the scenario: `parallax:config_gpus{config, tp, pp, replicas}` is a constant series
per configuration (every role of a disaggregated one counted; its labels read "prefill/decode"), and the
per-GPU rule divides by it. Without a scenario that rule is left out.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from monitoring import metrics as m
from monitoring.duration import prometheus_duration
from schema.deployment import ParallelConfig

CONFIG_GPUS = "parallax:config_gpus"
REQUEST_RATE = "parallax:request_rate"          # requests/s, every status
ERROR_RATIO = "parallax:error_ratio"            # share of requests that did not end "ok"
TTFT = "parallax:ttft_seconds"                  # + quantile label
TPOT = "parallax:tpot_seconds"                  # + quantile label
E2E = "parallax:e2e_seconds"                    # + quantile label
SLO_ATTAINMENT = "parallax:slo_attainment"      # share of ended requests (failed ones too) that met their SLO
GOODPUT = "parallax:goodput"                    # requests/s that met their SLO
OUTPUT_TOKENS_RATE = "parallax:output_tokens_rate"
OUTPUT_TOKENS_PER_GPU = "parallax:output_tokens_per_gpu"
CLASS_ARRIVAL_RATE = "parallax:class_arrival_rate"              # requests/s of a class, every configuration
CLASS_PROMPT_TOKENS_MEAN = "parallax:class_prompt_tokens_mean"  # mean prompt tokens of a class's arrivals
CLASS_PROMPT_TOKENS = "parallax:class_prompt_tokens"            # + quantile label
CLASS_OUTPUT_TOKENS_MEAN = "parallax:class_output_tokens_mean"  # mean output tokens of a class's requests ended ok
CLASS_OUTPUT_TOKENS = "parallax:class_output_tokens"            # + quantile label

QUANTILES = ("0.5", "0.9", "0.99")
GROUP_BY = "config, sla_class"
SOURCES = {"server": "ray_" + m.SERVER_PREFIX, "client": m.CLIENT_PREFIX}


def shape_labels(c: ParallelConfig) -> dict[str, str]:
    """The `tp`, `pp` and `replicas` labels of a configuration; a disaggregated one's read "prefill/decode"
    (tp "4/2": prefill replicas of TP4, decode replicas of TP2)."""
    return {k: "/".join(str(getattr(g, k)) for g in c.groups) for k in ("tp", "pp", "replicas")}


def _rate(metric: str, window: str) -> str:
    return f"sum by ({GROUP_BY}) (rate({metric}[{window}]))"


def _source_rules(source: str, prefix: str, window: str, per_gpu: bool) -> list[dict[str, Any]]:
    def rule(record: str, expr: str, **extra: str) -> dict[str, Any]:
        return {"record": record, "expr": expr, "labels": {"source": source, **extra}}

    requests = prefix + m.SERVER_REQUESTS + "_total"
    everything = _rate(requests, window)
    # A pair none of whose requests met the SLO has no met counter: count it as 0.
    met_or_0 = f"({_rate(prefix + m.SERVER_SLO_MET + '_total', window)} or 0 * {everything})"
    failed = f"sum by ({GROUP_BY}) (rate({requests}{{status!=\"ok\"}}[{window}]))"
    rules = [rule(REQUEST_RATE, everything), rule(ERROR_RATIO, f"({failed} or 0 * {everything}) / {everything}")]
    for record, name in ((TTFT, m.SERVER_TTFT), (TPOT, m.SERVER_TPOT), (E2E, m.SERVER_E2E)):
        for q in QUANTILES:
            buckets = f"sum by ({GROUP_BY}, le) (rate({prefix}{name}_bucket[{window}]))"
            rules.append(rule(record, f"histogram_quantile({q}, {buckets})", quantile=q))
    tokens = _rate(prefix + m.SERVER_OUTPUT_TOKENS + "_total", window)
    rules += [
        # both counters move at a request's end, but Ray exports a replica's metrics in batches, so a scrape can
        # hold one's increment and not yet the other's: a share above 1 is that skew, never a fact
        rule(SLO_ATTAINMENT, f"clamp_max({met_or_0} / {everything}, 1)"),
        rule(GOODPUT, met_or_0),
        rule(OUTPUT_TOKENS_RATE, tokens),
    ]
    if per_gpu:
        rules.append(rule(OUTPUT_TOKENS_PER_GPU, f"{tokens} / on (config) group_left () {CONFIG_GPUS}"))
    return rules


def _traffic_rules(window: str) -> list[dict[str, Any]]:
    """Per class, over every configuration: arrival rate, prompt and output lengths (server side)."""
    prefix = SOURCES["server"]

    def rule(record: str, expr: str, **extra: str) -> dict[str, Any]:
        return {"record": record, "expr": expr, "labels": {"source": "server", **extra}}

    def by_class(metric: str, by: str = "sla_class") -> str:
        return f"sum by ({by}) (rate({prefix}{metric}[{window}]))"

    arrivals = by_class(m.SERVER_ARRIVALS + "_total")
    ended_ok = by_class(m.SERVER_REQUESTS + '_total{status="ok"}')
    rules = [rule(CLASS_ARRIVAL_RATE, arrivals),
             rule(CLASS_PROMPT_TOKENS_MEAN, f"{by_class(m.SERVER_PROMPT_TOKENS + '_total')} / {arrivals}"),
             rule(CLASS_OUTPUT_TOKENS_MEAN, f"{by_class(m.SERVER_OUTPUT_TOKENS + '_total')} / {ended_ok}")]
    for record, name in ((CLASS_PROMPT_TOKENS, m.SERVER_PROMPT_LENGTH), (CLASS_OUTPUT_TOKENS, m.SERVER_OUTPUT_LENGTH)):
        rules += [rule(record, f"histogram_quantile({q}, {by_class(name + '_bucket', 'sla_class, le')})", quantile=q)
                  for q in QUANTILES]
    return rules


def recording_rules(configs: Iterable[ParallelConfig] = (), window: str = "30s",
                    interval_s: float = 1.0) -> dict[str, Any]:
    """The rules file (as data) for these configurations; `window` is the rate window of every rule."""
    configs = list(configs)
    gpu_rules = [{"record": CONFIG_GPUS, "expr": f"vector({c.gpus})",
                  "labels": {"config": c.name, **shape_labels(c)}}
                 for c in configs]
    rules = gpu_rules + [r for source, prefix in SOURCES.items()
                         for r in _source_rules(source, prefix, window, per_gpu=bool(configs))]
    rules += _traffic_rules(window)
    return {"groups": [{"name": f"parallax-per-config-class-{window}", "interval": prometheus_duration(interval_s),
                        "rules": rules}]}


def write_rules(path: Path, rules: dict[str, Any]) -> Path:
    """Write a rules file; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rules, sort_keys=False, width=200))
    return path
