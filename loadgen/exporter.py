"""The load generator's own /metrics endpoint (client-side view, names from monitoring.metrics)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from loadgen.errors import LoadError
from loadgen.records import RequestRecord
from monitoring import metrics as m

_STATUS = {"ok": "ok", "timeout": "timeout", "error": "error"}


class ClientMetrics:
    """Histograms and SLO counters labelled by configuration and class, served on 127.0.0.1."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.registry = CollectorRegistry()
        labels = m.CLIENT_LABELS
        p = m.CLIENT_PREFIX
        reg = self.registry
        self.requests = Counter(p + m.CLIENT_REQUESTS, "requests finished, by status", (*labels, "status"),
                                registry=reg)
        self.ttft = Histogram(p + m.CLIENT_TTFT, "time to first token seen by the client", labels,
                              buckets=m.LATENCY_BUCKETS, registry=reg)
        self.tpot = Histogram(p + m.CLIENT_TPOT, "per-request mean time per output token", labels,
                              buckets=m.LATENCY_BUCKETS, registry=reg)
        self.itl = Histogram(p + m.CLIENT_ITL, "gaps between streamed tokens", labels,
                             buckets=m.LATENCY_BUCKETS, registry=reg)
        self.e2e = Histogram(p + m.CLIENT_E2E, "end-to-end request latency", labels,
                             buckets=m.LATENCY_BUCKETS, registry=reg)
        self.tokens = Counter(p + m.CLIENT_OUTPUT_TOKENS, "output tokens received", labels, registry=reg)
        self.met = Counter(p + m.CLIENT_SLO_MET, "requests meeting every SLO of their class", labels,
                           registry=reg)
        self.violated = Counter(p + m.CLIENT_SLO_VIOLATED, "requests missing an SLO of their class", labels,
                                registry=reg)
        self.offered = Gauge(p + m.CLIENT_OFFERED_RATE, "requests/s the arrival process offers", ("sla_class",),
                             registry=reg)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=reg)
        except OSError as e:
            raise LoadError(f"--metrics-port {port}: cannot listen on {host}:{port} ({e.strerror}); "
                            "pick another port, or 0 for any free one") from None
        self.port: int = self._server.server_port

    def observe(self, r: RequestRecord) -> None:
        if r.status not in _STATUS or r.warmup:
            return
        lv = (r.config, r.sla_class)
        self.requests.labels(*lv, _STATUS[r.status]).inc()
        if r.status == "ok":
            if r.ttft_s is not None:
                self.ttft.labels(*lv).observe(r.ttft_s)
            if r.tpot_s is not None:
                self.tpot.labels(*lv).observe(r.tpot_s)
            if r.e2e_s is not None:
                self.e2e.labels(*lv).observe(r.e2e_s)
            itl = self.itl.labels(*lv)
            for g in r.itl_s:
                itl.observe(g)
            self.tokens.labels(*lv).inc(r.output_tokens)
        (self.met if r.slo_met else self.violated).labels(*lv).inc()

    def set_offered_rate(self, sla_class: str, rate: float) -> None:
        self.offered.labels(sla_class).set(rate)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
