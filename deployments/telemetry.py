"""Metrics recorded inside an LLMServer replica through `ray.serve.metrics`, named per monitoring/metrics.py.

Two families: the engine's (vLLM's names, labels model_name/config/tp/pp/engine) and the server's
per-SLA-class figures (`parallax_*`, labels config/tp/pp/sla_class), including SLO met/violated and the
traffic itself (arrivals, prompt and output lengths).
Times are in engine-clock seconds: wall seconds divided by the simulated engine's `time_scale`.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from ray.serve import metrics

from monitoring import metrics as m
from schema.traffic import SLO

ENGINE_PREFIX = "vllm_"  # vLLM under Ray exports `vllm:x` as `ray_vllm_x`; ":" is deprecated in Ray names
ENGINES_WITH_OWN_METRICS = {"vllm"}  # deployments/engines/vllm/stat_logger.py


@dataclass(frozen=True)
class RequestTiming:
    """One finished request as the server saw it, in engine-clock seconds."""

    ttft_s: float
    tpot_s: float | None
    e2e_s: float
    prompt_tokens: int
    output_tokens: int


def _counter(name: str, desc: str, keys: tuple[str, ...], defaults: dict[str, str] | None = None
             ) -> metrics.Counter:
    c = metrics.Counter(name, desc, tag_keys=keys)  # type: ignore[arg-type]  # Ray annotates tuple[str]
    if defaults:
        c.set_default_tags(dict(defaults))  # a copy: Serve adds its own tags to the dict in place
    return c


def _gauge(name: str, desc: str, keys: tuple[str, ...], defaults: dict[str, str]) -> metrics.Gauge:
    g = metrics.Gauge(name, desc, tag_keys=keys)  # type: ignore[arg-type]
    g.set_default_tags(dict(defaults))
    return g


def _histogram(name: str, desc: str, buckets: tuple[float, ...], keys: tuple[str, ...],
               defaults: dict[str, str] | None = None) -> metrics.Histogram:
    h = metrics.Histogram(name, desc, boundaries=list(buckets), tag_keys=keys)  # type: ignore[arg-type]
    if defaults:
        h.set_default_tags(dict(defaults))
    return h


class ReplicaMetrics:
    """The metric objects of one replica, with its configuration's labels preset."""

    def __init__(self, config: str, tp: int, pp: int, engine: str):
        eng = dict(model_name=config, config=config, tp=str(tp), pp=str(pp), engine=engine)
        self._srv_base = dict(config=config, tp=str(tp), pp=str(pp))
        self._preempted = 0
        ek, sk, e = m.ENGINE_LABELS, m.SERVER_LABELS, ENGINE_PREFIX
        self._init_server_family(sk)
        # Real vLLM exports the engine family itself (its Ray stat logger, same names and labels): recording
        # it here too would define each metric twice in the replica and count every request twice.
        self.engine_family = engine not in ENGINES_WITH_OWN_METRICS
        if not self.engine_family:
            return
        self.running = _gauge(e + m.NUM_REQUESTS_RUNNING, "requests in the engine's batch", ek, eng)
        self.waiting = _gauge(e + m.NUM_REQUESTS_WAITING, "requests waiting in the engine", ek, eng)
        self.kv_usage = _gauge(e + m.KV_CACHE_USAGE, "fraction of KV-cache blocks in use", ek, eng)
        self.preemptions = _counter(e + m.NUM_PREEMPTIONS, "preemptions so far", ek, eng)
        self.prompt_tokens = _counter(e + m.PROMPT_TOKENS, "prefilled prompt tokens", ek, eng)
        self.generation_tokens = _counter(e + m.GENERATION_TOKENS, "generated tokens", ek, eng)
        self.ttft = _histogram(e + m.TIME_TO_FIRST_TOKEN, "time to first token (engine clock)", m.TTFT_BUCKETS,
                               ek, eng)
        self.itl = _histogram(e + m.INTER_TOKEN_LATENCY, "inter-token latency (engine clock)", m.ITL_BUCKETS, ek, eng)
        self.tpot = _histogram(e + m.TIME_PER_OUTPUT_TOKEN, "per-request mean time per output token",
                               m.ITL_BUCKETS, ek, eng)
        self.e2e = _histogram(e + m.E2E_REQUEST_LATENCY, "end-to-end request latency", m.REQUEST_LATENCY_BUCKETS,
                              ek, eng)
        self.success = _counter(e + m.REQUEST_SUCCESS, "finished requests", (*ek, "finished_reason"), eng)

    def _init_server_family(self, sk: tuple[str, ...]) -> None:
        p = m.SERVER_PREFIX
        self.s_requests = _counter(p + m.SERVER_REQUESTS, "requests by outcome", (*sk, "status"))
        self.s_ttft = _histogram(p + m.SERVER_TTFT, "TTFT from ingress arrival (engine clock)", m.LATENCY_BUCKETS, sk)
        self.s_tpot = _histogram(p + m.SERVER_TPOT, "per-request mean time per output token (engine clock)",
                                 m.LATENCY_BUCKETS, sk)
        self.s_e2e = _histogram(p + m.SERVER_E2E, "end-to-end latency from ingress arrival (engine clock)",
                                m.LATENCY_BUCKETS, sk)
        self.s_tokens = _counter(p + m.SERVER_OUTPUT_TOKENS, "output tokens", sk)
        self.s_met = _counter(p + m.SERVER_SLO_MET, "requests meeting their SLO", sk)
        self.s_violated = _counter(p + m.SERVER_SLO_VIOLATED, "requests violating their SLO", sk)
        self.s_arrivals = _counter(p + m.SERVER_ARRIVALS, "requests of the class that arrived", sk)
        self.s_prompt_tokens = _counter(p + m.SERVER_PROMPT_TOKENS, "prompt tokens of the requests that arrived", sk)
        self.s_prompt_len = _histogram(p + m.SERVER_PROMPT_LENGTH, "prompt tokens per arriving request",
                                       m.TOKEN_BUCKETS, sk)
        self.s_output_len = _histogram(p + m.SERVER_OUTPUT_LENGTH, "output tokens per request that ended ok",
                                       m.TOKEN_BUCKETS, sk)

    def declare(self, sla_classes: Iterable[str]) -> None:
        """Export every per-class counter at 0 before its first request. Prometheus' rate() takes a series'
        first sample as its baseline, so a counter born at 1 (e.g. the first failure of a class on this
        configuration) would hide that increment: a configuration whose first few requests fail, then is
        drained, would show no error at all. (Ray's Counter.inc refuses 0, hence its _record.)"""
        for sla_class in sla_classes:
            tags = {**self._srv_base, "sla_class": sla_class}
            for status in m.SERVER_STATUSES:
                self.s_requests._record(0.0, tags={**tags, "status": status})
            for counter in (self.s_tokens, self.s_met, self.s_violated, self.s_arrivals, self.s_prompt_tokens):
                counter._record(0.0, tags=tags)

    def arrived(self, sla_class: str, prompt_tokens: int) -> None:
        """A request of a known class reached this replica, with this many prompt tokens."""
        tags = {**self._srv_base, "sla_class": sla_class}
        self.s_arrivals.inc(1, tags=tags)
        if prompt_tokens > 0:   # Ray's Counter.inc refuses 0
            self.s_prompt_tokens.inc(prompt_tokens, tags=tags)
        self.s_prompt_len.observe(prompt_tokens, tags=tags)

    def set_engine_stats(self, running: int, waiting: int, kv_usage: float, preemptions: int) -> None:
        if not self.engine_family:
            return
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_usage.set(kv_usage)
        if preemptions > self._preempted:
            self.preemptions.inc(preemptions - self._preempted)
            self._preempted = preemptions

    def observe_itl(self, gap_s: float, tokens: int) -> None:
        """A chunk of `tokens` coalesced tokens arrived `gap_s` after the previous one."""
        if not self.engine_family:
            return
        per_token = gap_s / tokens
        for _ in range(tokens):
            self.itl.observe(per_token)

    def finished(self, sla_class: str, slo: SLO, engine: RequestTiming, server: RequestTiming,
                 finish_reason: str) -> None:
        """Record a completed request: engine figures from where the engine's clock started (server.received_at),
        server ones from the ingress's own stamp."""
        if self.engine_family:
            self.prompt_tokens.inc(engine.prompt_tokens)
            self.generation_tokens.inc(engine.output_tokens)
            self.ttft.observe(engine.ttft_s)
            if engine.tpot_s is not None:
                self.tpot.observe(engine.tpot_s)
            self.e2e.observe(engine.e2e_s)
            self.success.inc(1, tags={"finished_reason": finish_reason})
        tags = {**self._srv_base, "sla_class": sla_class}
        self.s_requests.inc(1, tags={**tags, "status": "ok"})
        self.s_ttft.observe(server.ttft_s, tags=tags)
        if server.tpot_s is not None:
            self.s_tpot.observe(server.tpot_s, tags=tags)
        self.s_e2e.observe(server.e2e_s, tags=tags)
        self.s_tokens.inc(server.output_tokens, tags=tags)
        self.s_output_len.observe(server.output_tokens, tags=tags)
        if slo.met(server.ttft_s, server.tpot_s, server.e2e_s):
            self.s_met.inc(1, tags=tags)
        else:
            self.s_violated.inc(1, tags=tags)

    def failed(self, sla_class: str, status: str) -> None:
        self.s_requests.inc(1, tags={**self._srv_base, "sla_class": sla_class, "status": status})
