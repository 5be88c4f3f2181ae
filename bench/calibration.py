"""Predicted vs measured for every row of bench/data/calibration.yaml, with the error and median errors.

Two predictions per figure: `fluid` (bench/steady_state.py, the model the constants were fitted with)
and `sched` (the simulator itself: the vLLM-like scheduler and event core over the performance model,
in virtual time: `--requests` requests queued at once for the max-throughput rows, a closed loop of
`concurrency` users for the NIM rows).

Run: .venv/bin/python -m bench.calibration [--calibration FILE.yaml] [--requests N] [--fluid-only]
"""

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.steady_state import MAX_NUM_SEQS, MAX_NUM_TOKENS, MEMORY_UTILIZATION, closed_loop, max_throughput
from deployments.catalog.dtypes import Dtype
from deployments.catalog.gpus import GPUS
from deployments.catalog.models import MODELS
from deployments.config import EngineConfig
from deployments.engines.sim.calibration import Calibration, load_calibration
from deployments.engines.sim.offline import RequestSpec, run_offline
from deployments.engines.sim.perf_model import PerfModel
from deployments.engines.sim.replica import ReplicaFactory

DATA = Path(__file__).resolve().parent / "data" / "calibration.yaml"
# FP8 ModelOpt checkpoints quantise the KV cache to FP8 as well (kv_cache_quant_algo: FP8).
DTYPE = KV_DTYPE = Dtype.fp8
# The tuned engine the TensorRT-LLM rows are taken to be (same settings as the fluid model).
ENGINE = EngineConfig(gpu_memory_utilization=MEMORY_UTILIZATION, max_num_seqs=MAX_NUM_SEQS,
                      max_num_batched_tokens=MAX_NUM_TOKENS)


@dataclass(frozen=True)
class Row:
    label: str
    metric: str
    measured: float
    predicted: float
    fit: bool

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1.0


def load_rows() -> dict[str, list[dict[str, object]]]:
    data = yaml.safe_load(DATA.read_text())
    assert isinstance(data, dict)
    return data


def _num(r: dict[str, object], key: str) -> float:
    return float(str(r[key]))


def _setup(r: dict[str, object], calibration: Calibration | None) -> tuple[PerfModel, ReplicaFactory]:
    model, gpu, tp = MODELS[str(r["model"])], GPUS[str(r["gpu"])], int(_num(r, "tp"))
    return (PerfModel(model, gpu, DTYPE, KV_DTYPE, tp=tp, calibration=calibration),
            ReplicaFactory(model, gpu, DTYPE, KV_DTYPE, tp, 1, ENGINE, calibration))


def _sched_max_throughput(factory: ReplicaFactory, isl: int, osl: int, n: int) -> float:
    res = run_offline(factory, [RequestSpec(isl, osl) for _ in range(n)])
    return sum(x.output_len for x in res.records) / res.makespan


def _sched_closed_loop(factory: ReplicaFactory, c: int, isl: int, osl: int) -> tuple[float, float, float]:
    """Mean TTFT, mean ITL and output tokens/s of the requests after the first wave of `c`."""
    res = run_offline(factory, [RequestSpec(isl, osl) for _ in range(max(5 * c, 20))], concurrency=c)
    steady = res.records[c:]
    e2e = statistics.fmean(x.e2e for x in steady)
    return (statistics.fmean(x.ttft for x in steady), statistics.fmean(x.tpot for x in steady),
            c * osl / e2e)   # Little's law over the closed loop


def predict(calibration: Calibration | None = None, scheduler_requests: int = 0) -> list[tuple[Row, Row | None]]:
    """(fluid, scheduler) predictions per measured figure; the scheduler's only when requests > 0."""
    data = load_rows()
    out: list[tuple[Row, Row | None]] = []
    for r in data["max_throughput"]:
        perf, factory = _setup(r, calibration)
        isl, osl, fit = int(_num(r, "isl")), int(_num(r, "osl")), bool(r["fit"])
        label = f"TRT {r['model']} TP{r['tp']} {r['gpu']} {isl}/{osl}"
        measured = _num(r, "output_tokens_per_s")
        fluid = Row(label, "out tok/s", measured, max_throughput(perf, isl, osl).output_tokens_per_s, fit)
        sched = None
        if scheduler_requests:
            tps = _sched_max_throughput(factory, isl, osl, scheduler_requests)
            sched = Row(label, "out tok/s", measured, tps, fit)
        out.append((fluid, sched))
    for r in data["concurrency"]:
        perf, factory = _setup(r, calibration)
        isl, osl, c, fit = int(_num(r, "isl")), int(_num(r, "osl")), int(_num(r, "concurrency")), bool(r["fit"])
        label = f"NIM {r['model']} TP{r['tp']} {r['gpu']} {isl}/{osl} c={c}"
        est = closed_loop(perf, c, isl, osl)
        fluid_values = (est.ttft_s * 1e3, est.step_s * 1e3, est.output_tokens_per_s)
        sched_values = None
        if scheduler_requests:
            ttft, itl, tps = _sched_closed_loop(factory, c, isl, osl)
            sched_values = (ttft * 1e3, itl * 1e3, tps)
        for i, (metric, key) in enumerate((("TTFT ms", "ttft_ms"), ("ITL ms", "itl_ms"),
                                           ("out tok/s", "output_tokens_per_s"))):
            out.append((Row(label, metric, _num(r, key), fluid_values[i], fit),
                        Row(label, metric, _num(r, key), sched_values[i], fit) if sched_values else None))
    return out


def _medians(name: str, rows: list[Row], keep: Callable[[Row], bool]) -> str:
    errs = [abs(r.error) for r in rows if keep(r)]
    return f"{name} {statistics.median(errs):5.1%} (n={len(errs)}, max {max(errs):.0%})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calibration", type=Path, help="YAML overriding the default constants")
    ap.add_argument("--requests", type=int, default=1000, help="requests per max-throughput scheduler run")
    ap.add_argument("--fluid-only", action="store_true", help="skip the scheduler runs")
    args = ap.parse_args()
    cal = load_calibration(args.calibration) if args.calibration else None
    pairs = predict(cal, 0 if args.fluid_only else args.requests)
    print(f"{'row':<48} {'metric':<9} {'measured':>9} {'fluid':>9} {'err':>7} {'sched':>9} {'err':>7}  set")
    for fluid, sched in pairs:
        s = f"{sched.predicted:>9.1f} {sched.error:>+7.1%}" if sched else f"{'-':>9} {'-':>7}"
        print(f"{fluid.label:<48} {fluid.metric:<9} {fluid.measured:>9.1f} {fluid.predicted:>9.1f} "
              f"{fluid.error:>+7.1%} {s}  {'fit' if fluid.fit else 'held-out'}")
    for engine, rows in (("fluid", [f for f, _ in pairs]), ("sched", [s for _, s in pairs if s is not None])):
        if rows:
            print(f"median |error| {engine}: " + ", ".join((
                _medians("all", rows, lambda r: True), _medians("fit", rows, lambda r: r.fit),
                _medians("held-out", rows, lambda r: not r.fit))))


if __name__ == "__main__":
    main()
