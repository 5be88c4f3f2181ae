"""Fit each measured GPU family's constants with the library's fitter (deployments/engines/sim/fit.py)
on its public measurements, and print them to paste into deployments/engines/sim/calibration.py.

Hopper: the `fit: true` rows of bench/data/calibration.yaml (the others are held out). CDNA-3 (MI300X,
MI325X) and CDNA-4 (MI355X): the rows of bench/data/calibration-amd.yaml marked `fit: true`. Free
constants and bounds per family below; everything else stays at the family's current value.

Run: .venv/bin/python -m bench.fit_calibration [--family hopper|cdna3|cdna4] [--no-loo]
"""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from deployments.engines.sim.calibration import FAMILIES
from deployments.engines.sim.fit import FitResult, fit_family
from deployments.engines.sim.measurements import Observation
from deployments.engines.sim.published import observations, read_points_yaml

DATA = Path(__file__).resolve().parent / "data"

# Upper fractions: what tuned microbenchmarks reach on H100 (cuBLAS FP8 GEMM ~0.8 of dense peak,
# STREAM-like copies ~0.9 of HBM bandwidth, FlashAttention-3 ~0.75 of bf16 peak); below half a 64-row
# Hopper MMA tile the half-plateau M is not physical.
HOPPER_BOUNDS = {
    "gemm_flops_fraction": (0.3, 0.8),
    "gemm_m_half": (32.0, 1024.0),
    "hbm_fraction": (0.5, 0.9),
    "attn_flops_fraction": (0.2, 0.75),
    "attn_hbm_fraction": (0.3, 0.9),
    "host_per_seq_us": (0.1, 50.0),
}


@dataclass(frozen=True)
class FamilyFit:
    """Which measurements fit which constants of one family, within which bounds."""

    family: str
    data: Path
    free: tuple[str, ...]
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


FITS: dict[str, FamilyFit] = {
    "hopper": FamilyFit("hopper", DATA / "calibration.yaml",
                        ("gemm_flops_fraction", "gemm_m_half", "hbm_fraction", "attn_flops_fraction",
                         "attn_hbm_fraction", "host_per_seq_us"), HOPPER_BOUNDS),
    # MI300X's vLLM max-throughput rows: two models × two shapes at TP8 pin the GEMM plateau and the
    # all-reduce bandwidth (prefill-carrying mixed steps: the host's decode time is not seen).
    "cdna3": FamilyFit("cdna3", DATA / "calibration-amd.yaml", ("gemm_flops_fraction", "link_fraction")),
    # MI355X's `vllm bench serve` rows at TP1 (no collectives): TTFT of 8k prompts pins prefill compute and
    # attention, TPOT and throughput the weight streaming.
    "cdna4": FamilyFit("cdna4", DATA / "calibration-amd.yaml",
                       ("gemm_flops_fraction", "hbm_fraction", "attn_flops_fraction")),
}


def family_observations(spec: FamilyFit) -> list[Observation]:
    """The observations of `spec`'s data file measured on GPUs of its family."""
    obs = observations(read_points_yaml(spec.data), str(spec.data), spec.data.parent)
    return [o for o in obs if o.experiment.setup.gpu.family == spec.family]


def run_fit(spec: FamilyFit, loo: bool = True) -> FitResult:
    return fit_family(family_observations(spec), spec.family, FAMILIES[spec.family], spec.free, spec.bounds, loo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--family", choices=sorted(FITS), action="append", help="default: every measured family")
    ap.add_argument("--no-loo", action="store_true", help="skip the leave-one-out refits")
    args = ap.parse_args()
    for name in args.family or sorted(FITS):
        result = run_fit(FITS[name], loo=not args.no_loo)
        print(f"{name}:")
        for n in result.free:
            print(f"    {n}={getattr(result.constants, n):.3g},   # was {getattr(result.base, n):.3g}")
        for note in result.notes:
            print(f"    note: {note}")
        parts = [f"{w} {m:.1%}" for w in ("fit", "loo", "held-out") if (m := result.median_error(w)) is not None]
        print("    median |error|: " + ", ".join(parts))


if __name__ == "__main__":
    main()
