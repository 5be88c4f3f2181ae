"""Fit Hopper's constants on the rows of bench/data/calibration.yaml marked `fit: true`.

Coordinate descent on log-parameters minimising the sum of squared log errors, within physical bounds
(a fraction of a datasheet peak cannot exceed what microbenchmarks reach). The link and latency
constants of collectives are not fitted (the data has no TP sweep to pin them), nor are the fixed
per-layer and per-iteration overheads (the data cannot tell them from each other): they stay at the
values justified in calibration.py. Prints the fitted constants to paste into calibration.py.

Run: .venv/bin/python -m bench.fit_calibration
"""

import math

from bench.calibration import predict
from deployments.engines.sim.calibration import FAMILIES, Calibration

# Bounds: (low, high). Upper fractions are what tuned microbenchmarks reach on H100 (cuBLAS FP8 GEMM
# ~0.8 of dense peak, STREAM-like copies ~0.9 of HBM bandwidth, FlashAttention-3 ~0.75 of bf16 peak).
BOUNDS = {
    "gemm_flops_fraction": (0.3, 0.8),
    "gemm_m_half": (32.0, 1024.0),  # below half a 64-row Hopper MMA tile is not physical
    "hbm_fraction": (0.5, 0.9),
    "attn_flops_fraction": (0.2, 0.75),
    "attn_hbm_fraction": (0.3, 0.9),
    "host_per_seq_us": (0.1, 50.0),
}


def loss(values: dict[str, float]) -> float:
    hopper = FAMILIES["hopper"].model_copy(update=values)
    cal = Calibration(families={**FAMILIES, "hopper": hopper})
    return sum(math.log(r.predicted / r.measured) ** 2 for r, _ in predict(cal) if r.fit)


def fit() -> dict[str, float]:
    # Start from the geometric middle of every range, so the fit does not depend on the current constants.
    values = {k: math.sqrt(lo * hi) for k, (lo, hi) in BOUNDS.items()}
    best = loss(values)
    step = 0.5
    while step > 0.01:
        improved = False
        for k, (lo, hi) in BOUNDS.items():
            for factor in (math.exp(step), math.exp(-step)):
                trial = {**values, k: min(hi, max(lo, values[k] * factor))}
                value = loss(trial)
                if value < best - 1e-12:
                    values, best, improved = trial, value, True
        if not improved:
            step /= 2
    print(f"loss {best:.4f}")
    return values


if __name__ == "__main__":
    for name, value in fit().items():
        print(f"    {name}={value:.3g},")
