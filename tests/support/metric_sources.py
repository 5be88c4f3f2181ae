"""Processes that export the contract's metric names with synthetic traffic, for monitoring tests.

- RaySource: a real local Ray whose actor records the engine and server metrics through
  `ray.util.metrics`, so the `ray_` prefix and Ray's own labels are real (Ray's metrics port).
- PromClientSource: a prometheus_client HTTP exporter for the load generator's client-side metrics,
  the controller's metrics, or a plain vLLM server's `vllm:` engine metrics.

Every source keeps recording in the background until stopped, so rates and quantiles have data.
Values are fixed per configuration (TTFT_S, TPOT_S) and per class (PROMPT_TOKENS) so tests can check what
the rules compute.
"""

import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from monitoring import metrics as m
from monitoring.ports import free_port
from schema.deployment import ParallelConfig, shape_label

CONFIGS = (ParallelConfig(name="tp8", tp=8), ParallelConfig(name="tp2", tp=2, replicas=2))
CLASSES = ("chat", "summarize")
ALWAYS_MET = ("tp8", "chat")        # the one (config, class) pair whose requests all meet the SLO and succeed;
                                    # every other pair: one ok + one failed request, one met + one violated SLO
TTFT_S = {"tp8": 0.035, "tp2": 0.35}
TPOT_S = {"tp8": 0.015, "tp2": 0.045}
OUTPUT_TOKENS = 20                  # per request
PROMPT_TOKENS = {"chat": 100, "summarize": 4000}


class Recorder(Protocol):
    def inc(self, name: str, amount: float, labels: dict[str, str]) -> None: ...
    def set(self, name: str, value: float, labels: dict[str, str]) -> None: ...
    def observe(self, name: str, value: float, labels: dict[str, str]) -> None: ...


# name, kind, label names, buckets
Spec = tuple[str, str, tuple[str, ...], tuple[float, ...]]


def engine_specs(prefix: str) -> list[Spec]:
    e = m.ENGINE_LABELS
    return [
        (prefix + m.NUM_REQUESTS_RUNNING, "gauge", e, ()),
        (prefix + m.NUM_REQUESTS_WAITING, "gauge", e, ()),
        (prefix + m.KV_CACHE_USAGE, "gauge", e, ()),
        (prefix + m.NUM_PREEMPTIONS, "counter", e, ()),
        (prefix + m.PROMPT_TOKENS, "counter", e, ()),
        (prefix + m.GENERATION_TOKENS, "counter", e, ()),
        (prefix + m.REQUEST_SUCCESS, "counter", (*e, "finished_reason"), ()),
        (prefix + m.TIME_TO_FIRST_TOKEN, "histogram", e, m.TTFT_BUCKETS),
        (prefix + m.INTER_TOKEN_LATENCY, "histogram", e, m.ITL_BUCKETS),
        (prefix + m.TIME_PER_OUTPUT_TOKEN, "histogram", e, m.ITL_BUCKETS),
        (prefix + m.E2E_REQUEST_LATENCY, "histogram", e, m.REQUEST_LATENCY_BUCKETS),
        (prefix + m.REQUEST_QUEUE_TIME, "histogram", e, m.REQUEST_LATENCY_BUCKETS),
        (prefix + m.REQUEST_PREFILL_TIME, "histogram", e, m.REQUEST_LATENCY_BUCKETS),
        (prefix + m.REQUEST_DECODE_TIME, "histogram", e, m.REQUEST_LATENCY_BUCKETS),
    ]


def per_class_specs(prefix: str, labels: tuple[str, ...]) -> list[Spec]:
    return [
        (prefix + m.SERVER_REQUESTS, "counter", (*labels, "status"), ()),
        (prefix + m.SERVER_TTFT, "histogram", labels, m.LATENCY_BUCKETS),
        (prefix + m.SERVER_TPOT, "histogram", labels, m.LATENCY_BUCKETS),
        (prefix + m.SERVER_E2E, "histogram", labels, m.LATENCY_BUCKETS),
        (prefix + m.SERVER_OUTPUT_TOKENS, "counter", labels, ()),
        (prefix + m.SERVER_SLO_MET, "counter", labels, ()),
        (prefix + m.SERVER_SLO_VIOLATED, "counter", labels, ()),
    ]


def server_traffic_specs() -> list[Spec]:
    """The server's per-class traffic: arrivals and request lengths (the LLMServer's only)."""
    p, labels = m.SERVER_PREFIX, m.SERVER_LABELS
    return [(p + m.SERVER_ARRIVALS, "counter", labels, ()),
            (p + m.SERVER_PROMPT_TOKENS, "counter", labels, ()),
            (p + m.SERVER_PROMPT_LENGTH, "histogram", labels, m.TOKEN_BUCKETS),
            (p + m.SERVER_OUTPUT_LENGTH, "histogram", labels, m.TOKEN_BUCKETS)]


def client_specs() -> list[Spec]:
    return [*per_class_specs(m.CLIENT_PREFIX, m.CLIENT_LABELS),
            (m.CLIENT_PREFIX + m.CLIENT_ITL, "histogram", m.CLIENT_LABELS, m.LATENCY_BUCKETS),
            (m.CLIENT_PREFIX + m.CLIENT_OFFERED_RATE, "gauge", m.CLIENT_LABELS, ())]


def controller_specs() -> list[Spec]:
    p = m.CONTROLLER_PREFIX
    return [(p + m.ROUTING_WEIGHT, "gauge", ("sla_class", "config"), ()),
            (p + m.DECISIONS, "counter", ("sla_class", "config", "policy"), ()),
            (p + m.STALE, "gauge", (), ()),
            (p + m.PREDICTED_HEADROOM, "gauge", ("sla_class", "config"), ()),
            (p + m.REPARTITION_DECISIONS, "counter", ("outcome",), ()),
            (p + m.REPARTITION_MOVES, "counter", ("result",), ()),
            (p + m.TRANSITION_STEP_SECONDS, "histogram", ("step",), m.TRANSITION_STEP_BUCKETS),
            (p + m.PREDICTED_GAIN, "gauge", (), ()),
            (p + m.REALISED_GAIN, "gauge", (), ()),
            (p + m.SHAPE_GPUS, "gauge", ("shape",), ()),
            (m.FAULT_PREFIX + m.FAULT_APPLIED, "counter", m.FAULT_LABELS, ()),
            (m.FAULT_PREFIX + m.FAULT_ACTIVE, "gauge", m.FAULT_LABELS, ())]


def emit_engine(rec: Recorder, prefix: str, rnd: random.Random) -> None:
    for c in CONFIGS:
        lab = {"model_name": c.name, "config": c.name, "tp": str(c.tp), "pp": str(c.pp), "engine": "sim"}
        rec.set(prefix + m.NUM_REQUESTS_RUNNING, rnd.randint(1, 8), lab)
        rec.set(prefix + m.NUM_REQUESTS_WAITING, rnd.randint(0, 3), lab)
        rec.set(prefix + m.KV_CACHE_USAGE, rnd.uniform(0.2, 0.6), lab)
        rec.inc(prefix + m.NUM_PREEMPTIONS, 1, lab)
        rec.inc(prefix + m.PROMPT_TOKENS, 100, lab)
        rec.inc(prefix + m.GENERATION_TOKENS, OUTPUT_TOKENS, lab)
        rec.inc(prefix + m.REQUEST_SUCCESS, 1, {**lab, "finished_reason": rnd.choice(("stop", "length"))})
        rec.observe(prefix + m.TIME_TO_FIRST_TOKEN, TTFT_S[c.name], lab)
        rec.observe(prefix + m.INTER_TOKEN_LATENCY, TPOT_S[c.name], lab)
        rec.observe(prefix + m.TIME_PER_OUTPUT_TOKEN, TPOT_S[c.name], lab)
        rec.observe(prefix + m.E2E_REQUEST_LATENCY, TTFT_S[c.name] + OUTPUT_TOKENS * TPOT_S[c.name], lab)
        rec.observe(prefix + m.REQUEST_QUEUE_TIME, 0.01, lab)
        rec.observe(prefix + m.REQUEST_PREFILL_TIME, TTFT_S[c.name], lab)
        rec.observe(prefix + m.REQUEST_DECODE_TIME, OUTPUT_TOKENS * TPOT_S[c.name], lab)


def emit_per_class(rec: Recorder, prefix: str, with_shape: bool) -> None:
    for c in CONFIGS:
        for k in CLASSES:
            lab = {"config": c.name, "sla_class": k} | ({"tp": str(c.tp), "pp": str(c.pp)} if with_shape else {})
            rec.inc(prefix + m.SERVER_REQUESTS, 1, {**lab, "status": "ok"})
            if (c.name, k) != ALWAYS_MET:
                rec.inc(prefix + m.SERVER_REQUESTS, 1, {**lab, "status": "error"})
            rec.observe(prefix + m.SERVER_TTFT, TTFT_S[c.name], lab)
            rec.observe(prefix + m.SERVER_TPOT, TPOT_S[c.name], lab)
            rec.observe(prefix + m.SERVER_E2E, TTFT_S[c.name] + OUTPUT_TOKENS * TPOT_S[c.name], lab)
            rec.inc(prefix + m.SERVER_OUTPUT_TOKENS, OUTPUT_TOKENS, lab)
            rec.inc(prefix + m.SERVER_SLO_MET, 1, lab)
            if (c.name, k) != ALWAYS_MET:
                rec.inc(prefix + m.SERVER_SLO_VIOLATED, 1, lab)


def emit_server_traffic(rec: Recorder) -> None:
    """Per round, the requests emit_per_class ends arrive, each with PROMPT_TOKENS[class] prompt tokens, and the
    one that ends ok has OUTPUT_TOKENS."""
    p = m.SERVER_PREFIX
    for c in CONFIGS:
        for k in CLASSES:
            lab = {"config": c.name, "tp": str(c.tp), "pp": str(c.pp), "sla_class": k}
            arrivals = 1 if (c.name, k) == ALWAYS_MET else 2
            rec.inc(p + m.SERVER_ARRIVALS, arrivals, lab)
            rec.inc(p + m.SERVER_PROMPT_TOKENS, arrivals * PROMPT_TOKENS[k], lab)
            for _ in range(arrivals):
                rec.observe(p + m.SERVER_PROMPT_LENGTH, PROMPT_TOKENS[k], lab)
            rec.observe(p + m.SERVER_OUTPUT_LENGTH, OUTPUT_TOKENS, lab)


def emit_client(rec: Recorder, rnd: random.Random) -> None:
    emit_per_class(rec, m.CLIENT_PREFIX, False)
    for c in CONFIGS:
        for k in CLASSES:
            lab = {"config": c.name, "sla_class": k}
            rec.observe(m.CLIENT_PREFIX + m.CLIENT_ITL, TPOT_S[c.name], lab)
            rec.set(m.CLIENT_PREFIX + m.CLIENT_OFFERED_RATE, 2.0, lab)


def emit_controller(rec: Recorder, rnd: random.Random) -> None:
    p = m.CONTROLLER_PREFIX
    for k in CLASSES:
        best = CONFIGS[int(time.time()) % len(CONFIGS)].name  # the choice flips every second
        for c in CONFIGS:
            rec.set(p + m.ROUTING_WEIGHT, 0.9 if c.name == best else 0.1, {"sla_class": k, "config": c.name})
            rec.set(p + m.PREDICTED_HEADROOM, rnd.uniform(0, 1), {"sla_class": k, "config": c.name})
        rec.inc(p + m.DECISIONS, 1, {"sla_class": k, "config": best, "policy": "best-per-class"})
    rec.set(p + m.STALE, 0, {})
    # the repartition policy: a re-plan per round, a move now and then, its steps timed
    rec.inc(p + m.REPARTITION_DECISIONS, 1, {"outcome": rnd.choice(("move", "stay"))})
    rec.inc(p + m.REPARTITION_MOVES, 1, {"result": "reached"})
    rec.observe(p + m.TRANSITION_STEP_SECONDS, rnd.uniform(0.1, 20), {"step": rnd.choice(("deploy", "drain"))})
    rec.set(p + m.PREDICTED_GAIN, rnd.uniform(-0.5, 1), {})
    rec.set(p + m.REALISED_GAIN, rnd.uniform(-0.5, 1), {})
    for c in CONFIGS:
        rec.set(p + m.SHAPE_GPUS, c.gpus, {"shape": shape_label(c.tp, c.pp)})
    for i, (action, target) in enumerate((("kill_replica", "tp8"), ("restart_prometheus", ""))):
        labels = {"fault": str(i), "action": action, "target": target}
        rec.inc(m.FAULT_PREFIX + m.FAULT_APPLIED, 1, labels)
        rec.set(m.FAULT_PREFIX + m.FAULT_ACTIVE, 1, labels)


class _RayRecorder:
    """Recorder over ray.util.metrics (created inside the actor)."""

    def __init__(self, specs: Sequence[Spec]):
        from ray.util import metrics as rm

        self._m: dict[str, Any] = {}
        for name, kind, labels, buckets in specs:
            if kind == "counter":
                self._m[name] = rm.Counter(name, "test", tag_keys=labels)
            elif kind == "gauge":
                self._m[name] = rm.Gauge(name, "test", tag_keys=labels)
            else:
                self._m[name] = rm.Histogram(name, "test", boundaries=list(buckets), tag_keys=labels)

    def inc(self, name: str, amount: float, labels: dict[str, str]) -> None:
        self._m[name].inc(amount, labels)

    def set(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._m[name].set(value, labels)

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._m[name].observe(value, labels)


class _PromRecorder:
    """Recorder over a private prometheus_client registry."""

    def __init__(self, specs: Sequence[Spec]):
        import prometheus_client as pc

        self.registry = pc.CollectorRegistry()
        self._m: dict[str, Any] = {}
        for name, kind, labels, buckets in specs:
            if kind == "counter":
                self._m[name] = pc.Counter(name, "test", labels, registry=self.registry)
            elif kind == "gauge":
                self._m[name] = pc.Gauge(name, "test", labels, registry=self.registry)
            else:
                self._m[name] = pc.Histogram(name, "test", labels, registry=self.registry, buckets=buckets)

    def _child(self, name: str, labels: dict[str, str]) -> Any:
        metric = self._m[name]
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, amount: float, labels: dict[str, str]) -> None:
        self._child(name, labels).inc(amount)

    def set(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._child(name, labels).set(value)

    def observe(self, name: str, value: float, labels: dict[str, str]) -> None:
        self._child(name, labels).observe(value)


def _ray_emitter_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class ContractEmitter:
        """Records engine metrics (vLLM names) and per-class server metrics, as the LLMServer would."""

        def __init__(self) -> None:
            self.rec = _RayRecorder(engine_specs("vllm_") + per_class_specs(m.SERVER_PREFIX, m.SERVER_LABELS)
                                    + server_traffic_specs())
            self.rnd = random.Random(1)

        def tick(self) -> None:
            emit_engine(self.rec, "vllm_", self.rnd)
            emit_per_class(self.rec, m.SERVER_PREFIX, True)
            emit_server_traffic(self.rec)

    return ContractEmitter


class _Ticker:
    def __init__(self, tick: Callable[[], None], period_s: float):
        self._stop = threading.Event()
        self._tick, self._period = tick, period_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._tick()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class RaySource:
    """A local Ray cluster exporting the engine and server metrics on its metrics port."""

    def __init__(self, period_s: float = 0.25):
        self.port = free_port()
        self.period_s = period_s
        self._tmp = tempfile.TemporaryDirectory(prefix="pxray")
        self._ticker: _Ticker | None = None

    def start(self) -> "RaySource":
        import ray

        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 _metrics_export_port=self.port, _temp_dir=self._tmp.name,
                 _system_config={"metrics_report_interval_ms": 1000})
        actor = _ray_emitter_class().remote()
        self._ticker = _Ticker(lambda: ray.get(actor.tick.remote(), timeout=30), self.period_s)
        self._ticker.start()
        return self

    def stop(self) -> None:
        import ray

        if self._ticker is not None:
            self._ticker.stop()
        ray.shutdown()
        self._tmp.cleanup()


class PromClientSource:
    """A prometheus_client /metrics endpoint on 127.0.0.1 recording with `emit` every `period_s`."""

    def __init__(self, specs: Sequence[Spec], emit: Callable[[Recorder, random.Random], None], period_s: float = 0.25):
        self.rec = _PromRecorder(specs)
        self.port = free_port()
        self._rnd = random.Random(2)
        self._ticker = _Ticker(lambda: emit(self.rec, self._rnd), period_s)
        self._server: Any = None

    def start(self) -> "PromClientSource":
        import prometheus_client as pc

        self._server, _ = pc.start_http_server(self.port, addr="127.0.0.1", registry=self.rec.registry)
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._ticker.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def loadgen_source() -> PromClientSource:
    return PromClientSource(client_specs(), emit_client)


def controller_source() -> PromClientSource:
    return PromClientSource(controller_specs(), emit_controller)


def plain_vllm_source() -> PromClientSource:
    """A plain vLLM server's engine metrics (`vllm:` names)."""
    return PromClientSource(engine_specs("vllm:"), lambda rec, rnd: emit_engine(rec, "vllm:", rnd))


