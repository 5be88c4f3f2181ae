"""Result JSON files of `vllm bench serve` and `vllm bench latency`, read into observations.

Neither file says what was deployed (GPU, TP, dtype): the caller's `Setup` does; a `vllm bench serve`
file may override `tp`, `pp`, `dtype` and `kv_dtype` with the keys `vllm bench serve --metadata
tp=8 dtype=fp8` writes into it. `serve`: the median TTFT and TPOT and the output throughput of the
run, predicted by simulating its requests (their lengths when saved with --save-detailed, else the
mean lengths), all at once (request rate inf) or at its Poisson / gamma rate, in a closed loop of
`max_concurrency` users when it had one. `latency`: the mean time of one batch of `batch_size`
requests of `input_len` / `output_len` tokens (keys the file lacks: give them with the setup).
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from deployments.catalog.files import read_json
from deployments.engines.sim.measurements import Metric, Observation, ServingRun, Setup
from deployments.engines.sim.offline import RequestSpec
from schema.dtypes import parse_dtype


@dataclass(frozen=True)
class LatencyShape:
    """The batch a `vllm bench latency` run timed, when its JSON does not say."""

    input_len: int | None = None
    output_len: int | None = None
    batch_size: int | None = None


def read_vllm_bench(path: Path, setup: Setup, shape: LatencyShape = LatencyShape()) -> list[Observation]:
    data = read_json(path, "a `vllm bench serve` or `vllm bench latency` result JSON")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of benchmark results")
    setup = _with_metadata(setup, data, path)
    if "avg_latency" in data:
        return _latency(path, data, setup, shape)
    if "completed" in data and "output_throughput" in data:
        return _serve(path, data, setup)
    raise ValueError(f"{path}: neither a `vllm bench serve` result (completed, output_throughput, …) nor a "
                     "`vllm bench latency` one (avg_latency)")


def _with_metadata(setup: Setup, data: dict[str, Any], path: Path) -> Setup:
    try:
        updates: dict[str, Any] = {k: int(data[k]) for k in ("tp", "pp") if k in data}
        updates |= {k: parse_dtype(str(data[k])) for k in ("dtype", "kv_dtype") if k in data}
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return replace(setup, **updates)


def _serve(path: Path, data: dict[str, Any], setup: Setup) -> list[Observation]:
    n = int(data["completed"])
    if n < 1:
        raise ValueError(f"{path}: no completed request")
    if isinstance(data.get("input_lens"), list) and isinstance(data.get("output_lens"), list):
        pairs = [(int(i), int(o)) for i, o in zip(data["input_lens"], data["output_lens"], strict=False) if o > 0]
    else:
        isl = max(1, round(data.get("total_input_tokens", 0) / n))
        osl = max(1, round(data.get("total_output_tokens", 0) / n))
        pairs = [(isl, osl)] * n
    rate = data.get("request_rate", "inf")
    concurrency = data.get("max_concurrency")
    times = np.zeros(len(pairs))
    if not concurrency and rate not in ("inf", None) and float(rate) < float("inf"):
        rng = np.random.default_rng(0)
        burst = float(data.get("burstiness") or 1.0)
        gaps = rng.gamma(1.0 / burst, burst / float(rate), len(pairs))
        gaps[0] = 0.0
        times = np.cumsum(gaps)
    requests = tuple(RequestSpec(i, o, float(t)) for (i, o), t in zip(pairs, times, strict=True))
    run = ServingRun(setup, requests, int(concurrency) if concurrency else None)
    load = f"c={concurrency}" if concurrency else ("max load" if rate in ("inf", None) else f"{rate} req/s")
    label = f"{path.name} {setup.describe()} {load}"
    out = []
    for key, metric, scale in (("median_ttft_ms", Metric.ttft_median_s, 1e-3), ("median_tpot_ms", Metric.tpot_median_s,
                               1e-3), ("output_throughput", Metric.output_tokens_per_s, 1.0)):
        if isinstance(data.get(key), int | float) and data[key] > 0:
            out.append(Observation(run, metric, float(data[key]) * scale, f"{label} {metric.value}", str(path)))
    return out


def _latency(path: Path, data: dict[str, Any], setup: Setup, shape: LatencyShape) -> list[Observation]:
    values = {k: data.get(k) or getattr(shape, k) for k in ("input_len", "output_len", "batch_size")}
    missing = [k for k, v in values.items() if not v]
    if missing:
        raise ValueError(f"{path}: a `vllm bench latency` result does not record {', '.join(missing)}; add them to "
                         "the JSON or give them (--input-len, --output-len, --batch-size)")
    isl, osl, b = (int(values[k]) for k in ("input_len", "output_len", "batch_size"))
    run = ServingRun(setup, tuple(RequestSpec(isl, osl) for _ in range(b)))
    return [Observation(run, Metric.makespan_s, float(data["avg_latency"]),
                        f"{path.name} {setup.describe()} batch {b} × {isl}/{osl} latency", str(path))]
