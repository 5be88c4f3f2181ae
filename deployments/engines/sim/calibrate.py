"""`parallax calibrate`: whatever measurements a user has → one GPU family's constants.

Inputs, told apart by what they are: a profile (`parallax profile`, YAML `kind: parallax-profile`), a
`vllm bench serve` / `vllm bench latency` result (JSON), a Parallax run folder served by vLLM (a
folder holding records.jsonl), published points (CSV, or YAML `points:`). The device calibrated is
`gpu` (a catalog GPU or a spec), else the first profile's; its family's constants are fitted together
on every observation made on that family (fit.py) and written as a calibration file that
`parallax simulate --calibration` and a scenario's `engine.calibration` read. A family the catalog
does not know (a CPU, a new GPU) starts from Hopper's constants; the file then gives every constant,
and `device_spec` the GPU spec to simulate it with.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import yaml

from deployments.catalog.files import read_yaml
from deployments.catalog.gpus import GpuSpec, resolve_gpu
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.calibration import DEFAULT_CALIBRATION, Calibration, FamilyConstants
from deployments.engines.sim.fit import FitResult, fit_sources
from deployments.engines.sim.measurements import Observation, Setup
from deployments.engines.sim.profile_data import PROFILE_KIND, ProfileFile, profile_observations, read_profile
from deployments.engines.sim.published import observations as published_observations
from deployments.engines.sim.published import read_points_csv, read_points_yaml
from deployments.engines.sim.run_folder import read_run_folder
from deployments.engines.sim.vllm_bench import LatencyShape, read_vllm_bench
from loadgen.records import RECORDS_FILE
from schema.deployment import EngineConfig
from schema.dtypes import Dtype

BASE_FAMILY = "hopper"   # where a family the defaults lack starts from


@dataclass(frozen=True)
class BenchContext:
    """What vLLM bench results and run folders do not say themselves: the model (run folders whose
    model path does not resolve; bench results always), the deployment of bench results, and the batch
    of a latency result."""

    model: ModelSpec | None = None
    dtype: Dtype = Dtype.bf16
    kv_dtype: Dtype | None = None
    tp: int = 1
    pp: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    latency: LatencyShape = field(default_factory=LatencyShape)


@dataclass(frozen=True)
class Gathered:
    observations: list[Observation]
    device: GpuSpec
    notes: list[str]


def input_kind(path: Path) -> str:
    """profile | vllm-bench | run-folder | published (CSV or YAML points); ValueError when none."""
    if path.is_dir():
        if (path / RECORDS_FILE).exists():
            return "run-folder"
        raise ValueError(f"{path}: a folder without {RECORDS_FILE}; give a run folder written by `parallax run`")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "vllm-bench"
    if suffix == ".csv":
        return "published"
    if suffix in (".yaml", ".yml"):
        raw = read_yaml(path, "a profile or a YAML of published points")
        if isinstance(raw, dict) and raw.get("kind") == PROFILE_KIND:
            return "profile"
        if isinstance(raw, dict) and "points" in raw:
            return "published"
        raise ValueError(f"{path}: neither a profile (kind: {PROFILE_KIND}) nor published points (points: [...])")
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    raise ValueError(f"{path}: unknown input; give a profile (.yaml), a vllm bench result (.json), a run folder, "
                     "or published points (.csv / .yaml)")


def gather(paths: Sequence[Path], gpu: GpuSpec | None, context: BenchContext = BenchContext()) -> Gathered:
    """Every observation of every input, on the device calibrated."""
    kinds = [(p, input_kind(p)) for p in paths]
    profiles: list[tuple[Path, ProfileFile]] = [(p, read_profile(p)) for p, k in kinds if k == "profile"]
    published = {p: read_points_csv(p) if p.suffix.lower() == ".csv" else read_points_yaml(p)
                 for p, k in kinds if k == "published"}
    device = gpu or (profiles[0][1].device if profiles else None)
    if device is None:
        named = {(p, pt.gpu) for p, rows in published.items() for pt in rows}
        if len({g for _, g in named}) != 1 or len(published) != len(kinds):
            raise ValueError("which device is calibrated? give --gpu (a catalog GPU or a YAML spec) or a profile")
        p, g = named.pop()
        device = resolve_gpu(g, p.parent)
    notes: list[str] = []
    obs: list[Observation] = []
    for p, k in kinds:
        match k:
            case "profile":
                prof = dict(profiles)[p]
                if prof.device.family != device.family:
                    notes.append(f"{p}: profiled on {prof.device.name} ({prof.device.family}), not {device.family}: "
                                 "skipped")
                    continue
                obs += profile_observations(prof, str(p), device)
            case "published":
                rows = published_observations(published[p], str(p), p.parent)
                kept = [o for o in rows if o.experiment.setup.gpu.family == device.family]
                if len(kept) < len(rows):
                    notes.append(f"{p}: {len(rows) - len(kept)} row(s) of other GPU families skipped")
                obs += kept
            case "run-folder":
                read = read_run_folder(p, device, context.model)
                obs += read.observations
                notes += read.notes
            case _:
                if context.model is None:
                    raise ValueError(f"{p}: a vllm bench result does not say which model ran; give --model")
                kv = context.kv_dtype or (Dtype.fp32 if context.dtype == Dtype.fp32 else Dtype.bf16)
                setup = Setup(context.model, device, context.dtype, kv, context.tp, context.pp, 1, context.engine)
                obs += read_vllm_bench(p, setup, context.latency)
    if not obs:
        raise ValueError(f"no measurement on GPU family {device.family} in the inputs")
    return Gathered(obs, device, notes)


def base_constants(family: str, defaults: Calibration = DEFAULT_CALIBRATION) -> tuple[FamilyConstants, list[str]]:
    """The constants a fit starts from (and keeps where it does not fit them)."""
    if family in defaults.families:
        return defaults.families[family], []
    return defaults.families[BASE_FAMILY], [f"new family {family}: the constants not fitted are {BASE_FAMILY}'s"]


def calibrate(gathered: Gathered, family: str | None = None, free: Sequence[str] | None = None,
              keep: Sequence[str] = (), defaults: Calibration = DEFAULT_CALIBRATION) -> tuple[FitResult, list[str]]:
    """Fit the device's family (renamed `family` when given: a new device's own); IllPosedFit when the
    measurements cannot pin the free constants (default: what their sources can pin, less `keep`)."""
    name = family or gathered.device.family
    obs = gathered.observations
    if name != gathered.device.family:
        device = gathered.device.model_copy(update={"family": name})
        obs = [_on(o, device) for o in obs]
    base, notes = base_constants(name, defaults)
    return fit_sources(obs, name, base, free, keep, defaults=defaults), notes


def _on(o: Observation, device: GpuSpec) -> Observation:
    """The same observation, made on `device` (the calibrated device under its own family name)."""
    e = replace(o.experiment, setup=replace(o.experiment.setup, gpu=device))
    return replace(o, experiment=e)


def calibration_yaml(result: FitResult, inputs: Sequence[Path]) -> str:
    """The calibration file: every constant of the fitted family, with where they came from."""
    errs = ", ".join(f"{w} {m:.1%}" for w in ("fit", "loo") if (m := result.median_error(w)) is not None)
    header = [f"# Written by `parallax calibrate` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from:",
              *(f"#   {p}" for p in inputs),
              f"# fitted: {', '.join(result.free)}; median |error| {errs or '-'}",
              "# Use it: parallax simulate --calibration FILE …, or a scenario's engine.calibration: FILE"]
    body = {"families": {result.family: result.constants.model_dump()}}
    return "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False)


def device_spec_yaml(device: GpuSpec, family: str) -> str:
    spec = device.model_copy(update={"family": family}).model_dump(mode="json")
    return "# A GPU spec for `--gpu FILE` / a scenario's hardware.gpu (written by `parallax calibrate`).\n" + \
        yaml.safe_dump(spec, sort_keys=False)
