"""Every calibration row predicted vs measured, with its error: Hopper, then AMD, family by family.

Hopper (bench/data/calibration.yaml): two predictions per figure with the shipped constants, `fluid`
(steady_state.py, what the fit uses) and `sched` (the simulator itself in virtual time: 1000
requests queued at once for the max-throughput rows, a closed loop of C users for the NIM rows),
marked fit / held-out. AMD (bench/data/calibration-amd.yaml): per family, each row's error with the
shipped constants (in-sample for the rows fitted) and leave-one-out (predicted by a fit without it,
with the same free constants; bench/fit_calibration.py).

Run: .venv/bin/python -m bench.calibration [--calibration FILE.yaml] [--requests N] [--fluid-only]
     [--family hopper|cdna3|cdna4]
"""

import argparse
import statistics
from pathlib import Path

from bench.fit_calibration import FITS, run_fit
from deployments.engines.sim.calibration import DEFAULT_CALIBRATION, Calibration, load_calibration
from deployments.engines.sim.fit import FitResult
from deployments.engines.sim.measurements import Observation, ServingRun, SteadyRun, predict_all
from deployments.engines.sim.offline import RequestSpec


def sched_twin(o: Observation, requests: int, cache: dict[int, ServingRun]) -> Observation:
    """The same figure predicted by the simulator itself instead of the fluid estimate."""
    e = o.experiment
    assert isinstance(e, SteadyRun)
    if id(e) not in cache:
        if e.load == "max-throughput":
            cache[id(e)] = ServingRun(e.setup, tuple(RequestSpec(e.isl, e.osl) for _ in range(requests)))
        else:
            n = max(5 * e.concurrency, 20)   # the first wave of C requests is warm-up
            cache[id(e)] = ServingRun(e.setup, tuple(RequestSpec(e.isl, e.osl) for _ in range(n)), e.concurrency,
                                      tuple(range(e.concurrency, n)))
    return Observation(cache[id(e)], o.metric, o.measured, o.label, o.source, o.fit)


def _median(errors: list[float]) -> str:
    return f"{statistics.median(errors):5.1%} (n={len(errors)}, max {max(errors):.0%})" if errors else "-"


def print_hopper(result: FitResult, cal: Calibration, requests: int) -> None:
    obs = [p.observation for p in result.points]
    fluid = predict_all(obs, cal)
    cache: dict[int, ServingRun] = {}
    sched = predict_all([sched_twin(o, requests, cache) for o in obs], cal) if requests else [float("nan")] * len(obs)
    print("hopper (bench/data/calibration.yaml): shipped constants, fluid and sched; leave-one-out (fluid)")
    print(f"{'row':<72} {'measured':>9} {'fluid':>9} {'err':>7} {'sched':>9} {'err':>7} {'LOO':>7}  set")
    for p, f, s in zip(result.points, fluid, sched, strict=True):
        o = p.observation
        sc = f"{o.metric.shown(s):>9.1f} {s / o.measured - 1:>+7.1%}" if s == s else f"{'-':>9} {'-':>7}"
        loo = f"{p.loo_error:>+7.1%}" if p.loo_error is not None else f"{'-':>7}"
        print(f"{o.label:<72} {o.metric.shown(o.measured):>9.1f} {o.metric.shown(f):>9.1f} "
              f"{f / o.measured - 1:>+7.1%} {sc} {loo}  {'fit' if o.fit else 'held-out'}")
    for name, pred in (("fluid", fluid), ("sched", sched)):
        if pred[0] != pred[0]:
            continue
        errs = [(abs(p / o.measured - 1), o.fit) for o, p in zip(obs, pred, strict=True)]
        print(f"median |error| {name}: all {_median([e for e, _ in errs])}, fit {_median([e for e, f in errs if f])}, "
              f"held-out {_median([e for e, f in errs if not f])}")
    loo = [abs(e) for p in result.points if (e := p.loo_error) is not None]
    print(f"median |error| leave-one-out (fluid): {_median(loo)}")
    print("refit by bench.fit_calibration: " + ", ".join(f"{n}={getattr(result.constants, n):.3g}"
                                                          for n in result.free))


def print_family(result: FitResult, cal: Calibration) -> None:
    obs = [p.observation for p in result.points]
    shipped = predict_all(obs, cal)
    print(f"{result.family}: rows with the shipped constants (in-sample where fitted) and leave-one-out")
    print(f"{'row':<84} {'measured':>9} {'predicted':>9} {'err':>7} {'LOO':>7}  set")
    for p, s in zip(result.points, shipped, strict=True):
        o = p.observation
        loo = f"{p.loo_error:>+7.1%}" if p.loo_error is not None else f"{'-':>7}"
        print(f"{o.label:<84} {o.metric.shown(o.measured):>9.1f} {o.metric.shown(s):>9.1f} "
              f"{s / o.measured - 1:>+7.1%} {loo}  "
              f"{'fit' if o.fit else 'held-out'}")
    ins = [abs(s / p.observation.measured - 1) for p, s in zip(result.points, shipped, strict=True)
           if p.observation.fit]
    held = [abs(s / p.observation.measured - 1) for p, s in zip(result.points, shipped, strict=True)
            if not p.observation.fit]
    loo = [abs(e) for p in result.points if (e := p.loo_error) is not None]
    print(f"median |error| {result.family}: in-sample {_median(ins)}, leave-one-out {_median(loo)}, "
          f"held-out {_median(held)}")
    print("refit by bench.fit_calibration: " + ", ".join(f"{n}={getattr(result.constants, n):.3g}"
                                                          for n in result.free))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calibration", type=Path, help="YAML overriding the default constants")
    ap.add_argument("--requests", type=int, default=1000, help="requests per max-throughput scheduler run")
    ap.add_argument("--fluid-only", action="store_true", help="skip the scheduler runs of the Hopper rows")
    ap.add_argument("--family", choices=sorted(FITS), action="append", help="default: every measured family")
    args = ap.parse_args()
    cal = load_calibration(args.calibration) if args.calibration else DEFAULT_CALIBRATION
    for name in args.family or sorted(FITS, key=lambda f: f != "hopper"):
        result = run_fit(FITS[name])
        if name == "hopper":
            print_hopper(result, cal, 0 if args.fluid_only else args.requests)
        else:
            print_family(result, cal)
        print()


if __name__ == "__main__":
    main()
