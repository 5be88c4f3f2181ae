"""One record per scheduled request, written as JSONL in the run folder.

The controller's report reads these files: keep field names stable. Times `scheduled_time`, `send_time`
and `end_time` are Unix epoch seconds; the client's durations are wall seconds as measured, the server's
(`server_*`) are on the engine's clock. `slo_met` is judged on the engine's clock: against a simulated
engine that runs `engine_time_scale` (load-meta.json) times slower than the wall, on `on_engine_clock`.
`request_id` is the `x-request-id` the client sent, which the Parallax server logs and puts in the
response's `id` (loadgen.wire), so records join to server logs.
"""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loadgen.errors import LoadError
from schema.traffic import SLO

RECORDS_FILE = "records.jsonl"
SUMMARY_FILE = "load-summary.json"
META_FILE = "load-meta.json"

Status = Literal["ok", "error", "timeout", "cancelled"]
UNKNOWN_CONFIG = "unknown"   # a record's config when no response named one (a timeout, a dropped connection)


class RequestRecord(BaseModel):
    """What happened to one request, as the client saw it."""

    model_config = ConfigDict(extra="ignore")

    request_id: str
    sla_class: str
    config: str = Field(description="configuration that served it (x-parallax-config, else the model field)")
    model: str = Field(description="model name the request asked for ('auto': the ingress chooses)")
    rate_step: int = Field(description="index of the sweep step, or of the load phase (0 without either)")
    phase: str | None = Field(default=None, description="the load phase that sent it (load.phases: its name); "
                              "None without a phase schedule")
    offered_rate: float | None = Field(description="requests/s the arrival process offered (None: closed loop)")
    concurrency: int | None = None
    warmup: bool = False
    scheduled_time: float
    send_time: float | None = Field(description="None when the request was never sent (run interrupted)")
    end_time: float | None = Field(default=None, description="when the client saw the response end, or fail "
                                   "(None: never sent, or its load generator worker died first)")
    ttft_s: float | None = None
    tpot_s: float | None = Field(default=None, description="(e2e - ttft) / (output_tokens - 1)")
    itl_s: list[float] = Field(default_factory=list, description="gaps between tokens as they arrived")
    e2e_s: float | None = None
    prompt_tokens: int | None = Field(default=None, description="from the server's usage, else as planned")
    planned_prompt_tokens: int
    server_ttft_s: float | None = Field(default=None, description="the server's own TTFT, where it reports "
                                        "one (Parallax: usage, on the engine's clock)")
    server_tpot_s: float | None = Field(default=None, description="the server's own TPOT, likewise")
    replica: str | None = Field(default=None, description="the configuration's replica that served it, where "
                                "the server names one (Parallax: x-parallax-replica)")
    output_tokens: int = 0
    max_tokens: int
    status: Status
    http_status: int | None = None
    error: str | None = None
    slo_met: bool = False

    @property
    def scored(self) -> bool:
        """Whether the request counts in the figures: not warm-up traffic, and not cancelled (never sent, or cut
        off when the run stopped)."""
        return not self.warmup and self.status != "cancelled"

    @property
    def lateness_s(self) -> float | None:
        return None if self.send_time is None else self.send_time - self.scheduled_time

    def meets(self, slo: SLO) -> bool:
        """Whether this request met `slo`; one that did not end ok (error, timeout) meets none."""
        return self.status == "ok" and slo.met(self.ttft_s, self.tpot_s, self.e2e_s)

    def on_engine_clock(self, time_scale: float) -> "RequestRecord":
        """This record with the client's durations and the offered rate on the clock of an engine that runs
        `time_scale` wall seconds per engine second (deployments' `EngineConfig.clock_scale`); the epoch
        timestamps stay wall times and the server's figures are on the engine's clock already."""
        if time_scale == 1.0:
            return self
        k = time_scale

        def div(x: float | None) -> float | None:
            return None if x is None else x / k
        return self.model_copy(update={
            "ttft_s": div(self.ttft_s), "tpot_s": div(self.tpot_s), "e2e_s": div(self.e2e_s),
            "itl_s": [g / k for g in self.itl_s],
            "offered_rate": None if self.offered_rate is None else self.offered_rate * k})


def write_record(f: IO[str], record: RequestRecord) -> None:
    f.write(record.model_dump_json() + "\n")


def read_records(path: Path) -> list[RequestRecord]:
    """Records from a JSONL file (or a run folder holding records.jsonl)."""
    file = path / RECORDS_FILE if path.is_dir() else path
    try:
        lines = file.read_text().splitlines()
    except OSError as e:
        raise LoadError(f"{file}: cannot read records ({e.strerror}); give a run folder holding {RECORDS_FILE}") \
            from None
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(RequestRecord.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as e:
            raise LoadError(f"{file}: line {i}: not a request record ({str(e).splitlines()[0]})") from None
    return out


def write_records(path: Path, records: Iterable[RequestRecord]) -> None:
    with path.open("w") as f:
        for r in records:
            write_record(f, r)
