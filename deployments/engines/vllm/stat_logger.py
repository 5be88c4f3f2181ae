"""vLLM's Ray stat logger with the testbed's configuration labels, and a copy of the last gauges.

vLLM labels its metrics `model_name` (the served model name, which the testbed sets to the
configuration name) and `engine` (the engine-core index). This logger adds the `config`, `tp` and `pp`
labels of monitoring/metrics.py ENGINE_LABELS and sets `engine` to "vllm" (one engine core per replica,
so the index is always 0), so that dashboards and the controller query the same label set on the
simulated and the real engine. Exported on Ray's metrics port as `ray_vllm_<name>`.
"""

from typing import Any

from vllm.config import VllmConfig
from vllm.v1.metrics.ray_wrappers import (
    RayCounterWrapper,
    RayGaugeWrapper,
    RayHistogramWrapper,
    RayPrometheusMetric,
    RayPrometheusStatLogger,
)
from vllm.v1.metrics.stats import IterationStats, SchedulerStats

from deployments.engines.base import EngineStats
from monitoring.metrics import EXTERNAL_PREFIX_CACHE_HITS

ENGINE_NAME = "vllm"


def _with_labels(base: type[RayPrometheusMetric], extra: dict[str, str]) -> type[Any]:
    """A subclass of one of vLLM's Ray metric wrappers whose every sample carries `extra` labels."""

    class Labelled(base):  # type: ignore[valid-type, misc, unused-ignore]
        @staticmethod
        def _get_tag_keys(labelnames: list[str] | None) -> tuple[str, ...]:
            names = [n for n in (labelnames or []) if n not in extra]
            return (*RayPrometheusMetric._get_tag_keys(names), *extra)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._tags: dict[str, str] = {**self._tags, **extra}

        def _build_tags(self, *labels: Any, **labelskwargs: Any) -> dict[str, str]:
            if labels:  # positional values follow vLLM's own label names, not ours
                names = [k for k in self.metric._tag_keys if k != "ReplicaId" and k not in extra]
                if len(labels) != len(names):
                    raise ValueError(f"expected {len(names)} label values ({names}), got {len(labels)}")
                labelskwargs.update(zip(names, labels, strict=True))
            tags: dict[str, str] = super()._build_tags(**labelskwargs)
            if "engine" in tags:
                tags["engine"] = ENGINE_NAME
            return {**tags, **extra}

    Labelled.__name__ = f"Parallax{base.__name__}"
    return Labelled


def _zero_initialised(counter_cls: type[Any]) -> type[Any]:
    """Counters that export 0 as soon as they are labelled, as prometheus_client does on a plain vLLM
    server: Ray's Counter refuses inc(0), so a never-incremented series (preemptions) would be absent."""

    class ZeroInitialised(counter_cls):
        def labels(self, *labels: Any, **labelskwargs: Any) -> Any:
            clone = super().labels(*labels, **labelskwargs)
            clone.metric._record(0, tags=clone._tags)
            return clone

    ZeroInitialised.__name__ = counter_cls.__name__
    return ZeroInitialised


class ParallaxStatLogger(RayPrometheusStatLogger):
    """Ray-exported vLLM metrics with config/tp/pp labels; keeps the last scheduler gauges (and, in
    `extra`, the running count of prompt tokens a KV connector loaded)."""

    def __init__(self, vllm_config: VllmConfig, engine_indexes: list[int] | None = None):
        par = vllm_config.parallel_config
        extra = {
            "config": str(vllm_config.model_config.served_model_name),
            "tp": str(par.tensor_parallel_size),
            "pp": str(par.pipeline_parallel_size),
        }
        # Instance attributes shadow the class ones the parent reads while it builds its metrics.
        self._gauge_cls = _with_labels(RayGaugeWrapper, extra)
        self._counter_cls = _zero_initialised(_with_labels(RayCounterWrapper, extra))
        self._histogram_cls = _with_labels(RayHistogramWrapper, extra)
        self.last = EngineStats()
        super().__init__(vllm_config, engine_indexes)

    def record(self, scheduler_stats: SchedulerStats | None, iteration_stats: IterationStats | None,
               *args: Any, **kwargs: Any) -> None:
        if scheduler_stats is not None:
            self.last.running = scheduler_stats.num_running_reqs
            self.last.waiting = scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs
            self.last.kv_cache_usage = scheduler_stats.kv_cache_usage
            if (connector := scheduler_stats.connector_prefix_cache_stats) is not None:
                # Prompt tokens whose KV a connector loaded: what a disaggregated decode did not recompute.
                hits = self.last.extra.get(EXTERNAL_PREFIX_CACHE_HITS, 0.0)
                self.last.extra[EXTERNAL_PREFIX_CACHE_HITS] = hits + connector.hits
        if iteration_stats is not None:
            self.last.preemptions += iteration_stats.num_preempted_reqs
        super().record(scheduler_stats, iteration_stats, *args, **kwargs)
