"""Predicted vs measured for every row of bench/data/calibration.yaml, with the error and median errors.

Run: .venv/bin/python -m bench.calibration [--calibration FILE.yaml]
"""

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.steady_state import closed_loop, max_throughput
from deployments.catalog.dtypes import Dtype
from deployments.catalog.gpus import GPUS
from deployments.catalog.models import MODELS
from deployments.engines.sim.calibration import Calibration, load_calibration
from deployments.engines.sim.perf_model import PerfModel

DATA = Path(__file__).resolve().parent / "data" / "calibration.yaml"
# FP8 ModelOpt checkpoints quantise the KV cache to FP8 as well (kv_cache_quant_algo: FP8).
DTYPE = KV_DTYPE = Dtype.fp8


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


def predict(calibration: Calibration | None = None) -> list[Row]:
    """One Row per measured figure."""
    data = load_rows()
    out: list[Row] = []
    for r in data["max_throughput"]:
        perf = PerfModel(MODELS[str(r["model"])], GPUS[str(r["gpu"])], DTYPE, KV_DTYPE, tp=int(str(r["tp"])),
                         calibration=calibration)
        isl, osl = int(str(r["isl"])), int(str(r["osl"]))
        est = max_throughput(perf, isl, osl)
        label = f"TRT {r['model']} TP{r['tp']} {r['gpu']} {isl}/{osl}"
        out.append(Row(label, "out tok/s", float(str(r["output_tokens_per_s"])), est.output_tokens_per_s,
                       bool(r["fit"])))
    for r in data["concurrency"]:
        perf = PerfModel(MODELS[str(r["model"])], GPUS[str(r["gpu"])], DTYPE, KV_DTYPE, tp=int(str(r["tp"])),
                         calibration=calibration)
        isl, osl, c = int(str(r["isl"])), int(str(r["osl"])), int(str(r["concurrency"]))
        est = closed_loop(perf, c, isl, osl)
        label = f"NIM {r['model']} TP{r['tp']} {r['gpu']} {isl}/{osl} c={c}"
        fit = bool(r["fit"])
        out.append(Row(label, "TTFT ms", float(str(r["ttft_ms"])), est.ttft_s * 1e3, fit))
        out.append(Row(label, "ITL ms", float(str(r["itl_ms"])), est.step_s * 1e3, fit))
        out.append(Row(label, "out tok/s", float(str(r["output_tokens_per_s"])), est.output_tokens_per_s, fit))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calibration", type=Path, help="YAML overriding the default constants")
    args = ap.parse_args()
    cal = load_calibration(args.calibration) if args.calibration else None
    rows = predict(cal)
    print(f"{'row':<52} {'metric':<10} {'measured':>10} {'predicted':>10} {'error':>8}  set")
    for r in rows:
        print(f"{r.label:<52} {r.metric:<10} {r.measured:>10.1f} {r.predicted:>10.1f} {r.error:>+8.1%}  "
              f"{'fit' if r.fit else 'held-out'}")
    for name, sel in (("all", rows), ("fit", [r for r in rows if r.fit]), ("held-out", [r for r in rows if not r.fit])):
        errs = [abs(r.error) for r in sel]
        print(f"median |error| {name:<9} {statistics.median(errs):6.1%}  (n={len(errs)}, max {max(errs):.1%})")


if __name__ == "__main__":
    main()
