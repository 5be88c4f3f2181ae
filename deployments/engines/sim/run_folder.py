"""A Parallax run folder served by real vLLM, read into observations.

Per configuration and offered load (users of a closed loop, or requests/s): the server's own median
TTFT and TPOT (the records' `server_ttft_s` and `server_tpot_s`, on the engine's clock, so the
client's and the HTTP path's share stays out), predicted by replaying the actual requests (their
prompt and output lengths, their send times, or the closed loop's users) through the simulator.
Sweep steps at the same load are pooled (a sweep that repeats its loads, interleaved, averages out a
drifting machine): a closed loop continues across them, open-loop steps are replayed one after the
other with an idle gap between. Warm-up requests run in the replay but do not count. A run of the
simulated engine measures the simulator, not hardware: it is refused.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from deployments.catalog.files import read_yaml
from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec, resolve_model
from deployments.engines.sim.measurements import Metric, Observation, ServingRun, Setup
from deployments.engines.sim.offline import RequestSpec
from loadgen.errors import LoadError
from loadgen.records import RequestRecord, read_records
from schema.deployment import SCENARIO_FILE, DeploymentSpec

MIN_REQUESTS = 3   # fewer measured requests than this make no median worth fitting
IDLE_GAP_S = 600.0  # between replayed open-loop steps: the engine drains before the next one


@dataclass(frozen=True)
class RunFolderRead:
    observations: list[Observation]
    notes: list[str]


def read_deployment(folder: Path) -> DeploymentSpec:
    """The deployment half of the run's scenario.yaml."""
    path = folder / SCENARIO_FILE
    raw = read_yaml(path, "a run folder written by `parallax run`")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a scenario mapping")
    try:
        return DeploymentSpec.model_validate({k: v for k, v in raw.items() if k in DeploymentSpec.model_fields})
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{path}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def _model(spec: DeploymentSpec, folder: Path, override: ModelSpec | None) -> ModelSpec:
    if override is not None:
        return override
    for ref in (spec.model, spec.engine.model_path):
        if ref is None:
            continue
        try:
            return resolve_model(ref, folder)
        except ValueError:
            continue
    raise ValueError(f"{folder / SCENARIO_FILE}: model {spec.model!r} cannot be found from the run folder (a path "
                     "relative to the scenario it was run from?); give the model with --model")


def read_run_folder(folder: Path, gpu: GpuSpec, model: ModelSpec | None = None) -> RunFolderRead:
    """Observations of every (configuration, load step) with enough measured requests, on `gpu`."""
    spec = read_deployment(folder)
    if spec.engine.kind != "vllm":
        raise ValueError(f"{folder}: engine.kind is {spec.engine.kind}: its timings come from the simulator itself; "
                         "calibrate from runs served by vLLM (engine.kind: vllm)")
    m = _model(spec, folder, model)
    try:
        records = read_records(folder)
    except LoadError as e:
        raise ValueError(str(e)) from None
    groups: dict[tuple[str, int | None, float | None], dict[int, list[RequestRecord]]] = defaultdict(dict)
    for r in records:
        if r.status == "ok" and r.send_time is not None and r.output_tokens > 0:
            groups[(r.config, r.concurrency, None if r.concurrency else r.offered_rate)].setdefault(
                r.rate_step, []).append(r)
    configs = {c.name: c for c in spec.configurations}
    observations: list[Observation] = []
    notes = []
    for (config, closed, rate), steps in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0,
                                                                                kv[0][2] or 0.0)):
        c = configs.get(config)
        load = f"c={closed}" if closed else f"{rate:g} req/s"
        if c is None:
            notes.append(f"{folder.name}: records of configuration {config!r} not in its scenario: skipped")
            continue
        recs, requests = _replay(steps)
        measured = tuple(i for i, r in enumerate(recs) if not r.warmup and r.server_ttft_s is not None
                         and r.server_tpot_s is not None)
        if len(measured) < MIN_REQUESTS:
            notes.append(f"{folder.name} {config} {load}: {len(measured)} requests with the server's own TTFT/TPOT "
                         f"(need {MIN_REQUESTS}): skipped")
            continue
        setup = Setup(m, gpu, spec.dtype, spec.resolved_kv_dtype, c.tp, c.pp, c.replicas, spec.engine)
        run = ServingRun(setup, requests, closed, measured)
        label = (f"{folder.name} {config} {load} ({len(measured)} requests, step{'s' if len(steps) > 1 else ''} "
                 f"{','.join(map(str, sorted(steps)))})")
        for metric, values in ((Metric.ttft_median_s, [recs[i].server_ttft_s for i in measured]),
                               (Metric.tpot_median_s, [recs[i].server_tpot_s for i in measured])):
            observations.append(Observation(run, metric, statistics.median(v for v in values if v is not None),
                                            f"{label} {metric.value}", str(folder)))
    if not observations:
        raise ValueError(f"{folder}: no configuration and load step with {MIN_REQUESTS}+ successful requests carrying "
                         "the server's own TTFT/TPOT; was it served by this version of Parallax?")
    return RunFolderRead(observations, notes)


def _replay(steps: dict[int, list[RequestRecord]]) -> tuple[list[RequestRecord], tuple[RequestSpec, ...]]:
    """The records of one load's steps in replay order, and the requests to simulate: each step's in
    send order, open-loop arrivals relative to the step's first send and offset past the previous step."""
    recs: list[RequestRecord] = []
    requests: list[RequestSpec] = []
    offset = 0.0
    for _, step in sorted(steps.items()):
        step = sorted(step, key=lambda r: r.send_time or 0.0)
        t0 = step[0].send_time or 0.0
        for r in step:
            requests.append(RequestSpec(r.prompt_tokens or r.planned_prompt_tokens, r.output_tokens,
                                        offset + (r.send_time or t0) - t0, r.sla_class))
        recs += step
        offset = requests[-1].arrival + IDLE_GAP_S
    return recs, tuple(requests)
