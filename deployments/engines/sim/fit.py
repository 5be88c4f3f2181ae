"""Fit one GPU family's constants to measurements: least squares on log error inside physical bounds.

The residual of a measured figure is log(predicted / measured); a bounded Levenberg–Marquardt on the
logarithms of the free constants minimises their sum of squares (two starts: the family's current
constants and the geometric middle of the bounds). Before fitting, the sensitivity of every figure
to every free constant (d log figure / d log constant) says whether the data can pin them: a
constant no figure depends on, or two constants the figures cannot tell apart, make the fit
ill-posed, and the error names the measurement to add. After it, each fitted figure is predicted
again by a fit without it (leave-one-out).

Which constants a source can pin (the defaults of `default_free`, see MODEL.md):
- kernel timings (`parallax profile`): the GEMM plateau and half-plateau M, the HBM fraction, the
  attention fractions;
- serving figures (vLLM bench results, run folders, published points): the host's times per
  iteration and per sequence, given the kernel constants (a profile's, or the family's defaults).
Link and collective latencies need the same measurement at several TP/PP degrees, and the
per-layer overhead is indistinguishable from the host's per-iteration time for one model: a caller
frees them explicitly.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from deployments.engines.sim.calibration import DEFAULT_CALIBRATION, PHYSICAL_BOUNDS, Calibration, FamilyConstants
from deployments.engines.sim.measurements import Observation, predict_all

KERNEL_CONSTANTS = ("gemm_flops_fraction", "gemm_m_half", "hbm_fraction", "attn_flops_fraction",
                    "attn_hbm_fraction")
HOST_CONSTANTS = ("host_prefill_ms", "host_decode_ms", "host_per_seq_us")

# The measurement that pins each constant: what an ill-posed fit asks for.
MEASUREMENT_HINTS: dict[str, str] = {
    "gemm_flops_fraction": "GEMMs at large M (a profile), or figures dominated by prefill (TTFT of long "
                           "prompts, max throughput with long inputs)",
    "gemm_m_half": "GEMMs at mid-size M, 16-512 rows (a profile's M sweep)",
    "hbm_fraction": "GEMMs at small M or a device copy (a profile), or TPOT at low concurrency",
    "attn_flops_fraction": "prefill attention at long context (a profile), or TTFT of long prompts",
    "attn_hbm_fraction": "decode attention over long contexts (a profile), or TPOT with long contexts at "
                         "high concurrency",
    "layer_overhead_us": "the same measurement on models with different layer counts",
    "link_fraction": "the same measurement at several TP degrees with large batches",
    "ring_step_us": "the same measurement at several TP degrees with small batches",
    "oneshot_us": "the same measurement at several TP degrees with small batches",
    "p2p_us": "the same measurement at several PP degrees",
    "host_prefill_ms": "TTFT at low load (few requests in flight)",
    "host_decode_ms": "TPOT or ITL at low load",
    "host_per_seq_us": "TPOT at a second concurrency or request rate (another batch size)",
}

PENALTY = 5.0          # residual of a trial whose prediction fails (e^5 ≈ 150× off)
UNPINNED = 0.01        # a constant whose 1 % change moves no figure by 0.01 % is not pinned
COLLINEAR = 0.05       # smallest singular value of the normalised sensitivities below which two constants blur
STEP = 1e-3            # finite-difference step in log space
RELATIVE_GAIN = 1e-6   # the solver stops when an iteration lowers the cost by less than this share


class IllPosedFit(ValueError):
    """The measurements cannot pin the free constants; the message says which measurement to add."""


@dataclass(frozen=True)
class PointResult:
    """One observation with its prediction by the fitted constants, and by a fit without it."""

    observation: Observation
    predicted: float
    loo: float | None = None

    @property
    def error(self) -> float:
        return self.predicted / self.observation.measured - 1.0

    @property
    def loo_error(self) -> float | None:
        return None if self.loo is None else self.loo / self.observation.measured - 1.0


@dataclass(frozen=True)
class FitResult:
    family: str
    base: FamilyConstants
    constants: FamilyConstants
    free: tuple[str, ...]
    points: list[PointResult]
    notes: list[str] = field(default_factory=list)

    def calibration(self, defaults: Calibration = DEFAULT_CALIBRATION) -> Calibration:
        return Calibration(families={**defaults.families, self.family: self.constants})

    def median_error(self, which: str = "fit") -> float | None:
        """Median |error| of the fitted points in-sample (`fit`), leave-one-out (`loo`), or of the
        held-out points (`held-out`); None when there are none."""
        if which == "loo":
            errs = [abs(e) for p in self.points if p.observation.fit and (e := p.loo_error) is not None]
        else:
            errs = [abs(p.error) for p in self.points if p.observation.fit == (which == "fit")]
        return float(np.median(errs)) if errs else None


def default_free(observations: Sequence[Observation]) -> tuple[str, ...]:
    """The constants the sources of these observations can pin (the module docstring's table)."""
    kinds = {o.kind for o in observations if o.fit}
    return (KERNEL_CONSTANTS if "kernel" in kinds else ()) + (HOST_CONSTANTS if "serving" in kinds else ())


def fit_sources(observations: Sequence[Observation], family: str, base: FamilyConstants,
                free: Sequence[str] | None = None, keep: Sequence[str] = (), loo: bool = True,
                defaults: Calibration = DEFAULT_CALIBRATION) -> FitResult:
    """Fit in the order the sources pin the constants: with kernel timings among the observations, the
    kernel constants on them alone, then the other free constants on the serving figures given those.
    `free` (default: what the sources pin) less `keep`. One joint fit when there are no kernel timings."""
    names = [n for n in (free if free is not None else default_free(observations)) if n not in keep]
    kernel = [o for o in observations if o.kind == "kernel"]
    serving = [o for o in observations if o.kind == "serving"]
    first = [n for n in names if n in KERNEL_CONSTANTS] if kernel else []
    second = [n for n in names if n not in first]
    if not first:
        return fit_family(observations, family, base, names, loo=loo, defaults=defaults)
    r1 = fit_family(kernel, family, base, first, loo=loo, defaults=defaults)
    if not serving:
        return r1
    if not second:
        cal = r1.calibration(defaults)
        points = [PointResult(o, p) for o, p in zip(serving, predict_all(serving, cal), strict=True)]
        return FitResult(family, base, r1.constants, r1.free, r1.points + points, r1.notes)
    r2 = fit_family(serving, family, r1.constants, second, loo=loo, defaults=defaults)
    return FitResult(family, base, r2.constants, r1.free + r2.free, r1.points + r2.points, r1.notes + r2.notes)


def fit_family(observations: Sequence[Observation], family: str, base: FamilyConstants,
               free: Sequence[str] | None = None, bounds: dict[str, tuple[float, float]] | None = None,
               loo: bool = True, defaults: Calibration = DEFAULT_CALIBRATION) -> FitResult:
    """Fit `free` constants of `family` (the others stay at `base`) to the observations marked `fit`;
    predict every observation with the result. IllPosedFit when the data cannot pin them."""
    names = tuple(free if free is not None else default_free(observations))
    unknown = [n for n in names if n not in FamilyConstants.model_fields]
    if unknown:
        raise ValueError(f"unknown constant(s) {', '.join(unknown)}; use any of "
                         f"{', '.join(FamilyConstants.model_fields)}")
    if not names:
        raise IllPosedFit("no constant to fit: give kernel timings (a profile) or serving figures, or name "
                          "constants to free")
    others = sorted({o.experiment.setup.gpu.family for o in observations} - {family})
    if others:
        raise ValueError(f"measurements on GPU family {', '.join(others)} cannot calibrate family {family!r}; "
                         "fit one family at a time")
    b = {**PHYSICAL_BOUNDS, **(bounds or {})}
    lo = np.log([b[n][0] for n in names])
    hi = np.log([b[n][1] for n in names])
    fitted = [o for o in observations if o.fit]
    _check_enough(fitted, names)

    def residuals_of(obs: Sequence[Observation]) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: _residuals(obs, _calibration(defaults, family, base, names, x))

    fun = residuals_of(fitted)
    start = np.clip(np.log([getattr(base, n) for n in names]), lo, hi)
    middle = (lo + hi) / 2
    _check_pinned(fun, names, start, lo, hi, len(fitted))
    jac = _jacobian(fun, middle, fun(middle), lo, hi)   # where every constant is mid-range
    _check_separable(jac, names, np.linalg.norm(jac, axis=0) > 1e-9, len(fitted), 0.0)
    best = min((_solve(fun, x0, lo, hi) for x0 in (start, middle)), key=lambda xc: xc[1])[0]
    at_bound = _at_bound(best, lo, hi)
    _check_separable(_jacobian(fun, best, fun(best), lo, hi), names, ~at_bound, len(fitted), UNPINNED)
    cal = _calibration(defaults, family, base, names, best)
    predicted = predict_all(observations, cal)
    loo_values: dict[int, float] = {}
    if loo and len(fitted) - 1 >= len(names):
        for i, o in enumerate(fitted):
            rest = fitted[:i] + fitted[i + 1:]
            x, _ = _solve(residuals_of(rest), best, lo, hi, max_iter=20)
            loo_values[id(o)] = predict_all([o], _calibration(defaults, family, base, names, x))[0]
    points = [PointResult(o, p, loo_values.get(id(o))) for o, p in zip(observations, predicted, strict=True)]
    constants = cal.families[family]
    notes = []
    for n, x, low, stuck in zip(names, best, lo, at_bound, strict=True):
        if stuck:
            notes.append(f"{n} = {math.exp(x):.4g} is at its {'lower' if x - low < 0.5 else 'upper'} bound: the data "
                         "would push it further")
    return FitResult(family, base, constants, names, points, notes)


def _at_bound(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Constants within 1 % of their (log) range from a bound."""
    tol = 0.01 * (hi - lo)
    return (x <= lo + tol) | (x >= hi - tol)


def _calibration(defaults: Calibration, family: str, base: FamilyConstants, names: Sequence[str],
                 x: np.ndarray) -> Calibration:
    values = {n: float(math.exp(v)) for n, v in zip(names, x, strict=True)}
    return Calibration(families={**defaults.families, family: base.model_copy(update=values)})


def _residuals(obs: Sequence[Observation], cal: Calibration) -> np.ndarray:
    try:
        predicted = predict_all(obs, cal)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return np.full(len(obs), PENALTY)
    return np.array([math.log(p / o.measured) if p > 0 and math.isfinite(p) else PENALTY
                     for p, o in zip(predicted, obs, strict=True)])


def _jacobian(fun: Callable[[np.ndarray], np.ndarray], x: np.ndarray, r: np.ndarray, lo: np.ndarray,
              hi: np.ndarray) -> np.ndarray:
    """d residual / d log constant by forward (backward at the upper bound) differences."""
    jac = np.empty((r.size, x.size))
    for j in range(x.size):
        h = STEP if x[j] + STEP <= hi[j] else -STEP
        xh = x.copy()
        xh[j] += h
        jac[:, j] = (fun(xh) - r) / h
    return jac


def _solve(fun: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           max_iter: int = 60) -> tuple[np.ndarray, float]:
    """Bounded Levenberg–Marquardt: constants at a bound that the gradient pushes outwards sit out
    the step."""
    x = np.clip(x0, lo, hi)
    r = fun(x)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(max_iter):
        jac = _jacobian(fun, x, r, lo, hi)
        g = jac.T @ r
        at_lo, at_hi = x <= lo + 1e-12, x >= hi - 1e-12
        active = ~((at_lo & (g > 0)) | (at_hi & (g < 0)))
        if not active.any():
            break
        ja = jac[:, active]
        a = ja.T @ ja
        moved, gain = False, 0.0
        for _ in range(12):
            step = np.zeros_like(x)
            try:
                step[active] = np.linalg.solve(a + lam * (np.diag(np.diag(a)) + 1e-9 * np.eye(a.shape[0])),
                                               -g[active])
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            xn = np.clip(x + step, lo, hi)
            rn = fun(xn)
            cn = float(rn @ rn)
            if cn < cost:
                gain = cost - cn
                x, r, cost, moved = xn, rn, cn, True
                lam = max(lam / 3, 1e-9)
                break
            lam *= 4
        if not moved or gain < RELATIVE_GAIN * cost or cost < 1e-20:
            break
    return x, cost


def _check_enough(fitted: Sequence[Observation], names: Sequence[str]) -> None:
    if len(fitted) < len(names):
        missing = "; ".join(f"{n}: {MEASUREMENT_HINTS[n]}" for n in names)
        raise IllPosedFit(f"{len(fitted)} measurement(s) for {len(names)} free constants ({', '.join(names)}): "
                          f"add measurements that pin them ({missing}), or keep some fixed (--keep NAME)")


def _check_pinned(fun: Callable[[np.ndarray], np.ndarray], names: Sequence[str], x0: np.ndarray,
                  lo: np.ndarray, hi: np.ndarray, n: int) -> None:
    """IllPosedFit when moving a constant across its whole range (the others at `x0`) changes no
    figure by UNPINNED."""
    for j, name in enumerate(names):
        ends = []
        for end in (lo[j], hi[j]):
            x = x0.copy()
            x[j] = end
            ends.append(fun(x))
        if np.max(np.abs(ends[1] - ends[0])) < UNPINNED:
            raise IllPosedFit(f"none of the {n} measurements depends on {name}: add {MEASUREMENT_HINTS[name]}, "
                              f"or keep it fixed (--keep {name})")


def _check_separable(jac: np.ndarray, names: Sequence[str], movable: np.ndarray, n: int, floor: float) -> None:
    """IllPosedFit when two free constants (the `movable` ones) move the figures alike, or one moves
    them less than `floor`, where `jac` was taken: the data cannot pin them apart."""
    idx = [j for j in range(len(names)) if movable[j]]
    if not idx:
        return
    cols = jac[:, idx]
    norms = np.linalg.norm(cols, axis=0)
    for j, nrm in zip(idx, norms, strict=True):
        if nrm < floor:
            raise IllPosedFit(f"none of the {n} measurements depends on {names[j]} near the fit: add "
                              f"{MEASUREMENT_HINTS[names[j]]}, or keep it fixed (--keep {names[j]})")
    if len(idx) < 2:
        return
    _, sv, vt = np.linalg.svd(cols / norms, full_matrices=False)
    if sv[-1] < COLLINEAR:
        a, b = (names[idx[i]] for i in np.argsort(-np.abs(vt[-1]))[:2])
        raise IllPosedFit(f"these {n} measurements cannot tell {a} from {b} (they move every figure alike): "
                          f"add {MEASUREMENT_HINTS[b]}, or keep one fixed (--keep {b})")
