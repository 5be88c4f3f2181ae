"""A scenario resolved against the catalog and the files it names: model, GPU, memory fit, dtype,
calibration, length and trace files. `load_scenario` is how every command reads a scenario.

Every problem is reported as `FILE: FIELD: what is wrong; the fix`, never as a traceback.
"""

from dataclasses import dataclass
from pathlib import Path

from deployments.catalog.gpus import GpuSpec, resolve_gpu
from deployments.catalog.memory import check_parallelism, plan_engine_memory, weight_bytes_per_gpu
from deployments.catalog.models import ModelSpec, resolve_model
from deployments.engines.sim.calibration import DEFAULT_CALIBRATION, load_calibration
from loadgen.errors import LoadError
from loadgen.files import resolve_path
from loadgen.lengths import mean_length
from schema.deployment import ParallelConfig
from schema.plan import PlanSection
from schema.scenario import Scenario, ScenarioError, read_scenario_data, scenario_from_data
from schema.traffic import schedule_problems


@dataclass(frozen=True)
class Resolved:
    """A validated scenario with its catalog entries looked up."""

    scenario: Scenario
    model: ModelSpec
    gpu: GpuSpec
    source: str


def parse_scenario(data: object, source: str = "<scenario>", base_dir: Path | None = None,
                   need_configurations: bool = True) -> Resolved:
    """Validate already-loaded YAML data and resolve its catalog references (`need_configurations=False`:
    a scenario to plan, whose configurations are optional)."""
    return check_scenario(scenario_from_data(data, source), source, base_dir, need_configurations)


def load_scenario(path: str | Path, need_configurations: bool = True) -> Resolved:
    """Read, validate and resolve a scenario YAML file (configurations optional when planning)."""
    p = Path(path)
    return parse_scenario(read_scenario_data(p), str(p), p.parent, need_configurations)


Problems = list[tuple[str, str]]


def check_scenario(s: Scenario, source: str = "<scenario>", base_dir: Path | None = None,
                   need_configurations: bool = True) -> Resolved:
    """Checks that need the catalog or span several fields: one checker per section of the file
    (`need_configurations=False`: a scenario to plan, whose configurations are optional)."""
    problems: Problems = []
    if need_configurations and not s.configurations:
        problems.append(("configurations", "nothing to deploy: add configurations (name, tp, pp, replicas), or let "
                         "`parallax plan SCENARIO --write-scenario FILE` write them"))
    model = gpu = None
    try:
        model = resolve_model(s.model, base_dir)
    except ValueError as e:
        problems.append(("model", str(e)))
    try:
        gpu = resolve_gpu(s.hardware.gpu, base_dir)
    except ValueError as e:
        problems.append(("hardware.gpu", str(e)))
    problems += _check_configurations(s, model, gpu)
    problems += _check_dtype(s, gpu)
    problems += _check_classes(s, base_dir)
    problems += _check_server(s)
    problems += _check_load(s, base_dir)
    problems += _check_repartition(s)
    problems += _check_engine(s, gpu, base_dir)
    if s.plan is not None:
        problems += _check_plan(s.plan, [c.name for c in s.configurations], [c.name for c in s.classes],
                                s.controller.policy)
    if problems or model is None or gpu is None:
        raise ScenarioError(source, problems)
    return Resolved(scenario=_absolute_paths(s, base_dir), model=model, gpu=gpu, source=source)


def _check_configurations(s: Scenario, model: ModelSpec | None, gpu: GpuSpec | None) -> Problems:
    """Unique names, TP inside a node, a split the model allows, room for KV cache, GPUs enough for all."""
    problems: Problems = []
    names = [c.name for c in s.configurations]
    for i, c in enumerate(s.configurations):
        if names.count(c.name) > 1:
            problems.append((f"configurations[{i}].name", f"duplicate configuration name {c.name!r}"))
        problems += _check_placement(s, i, c)
        if model is not None:
            problems += _check_memory(s, i, c, model, gpu)
    used = sum(c.gpus for c in s.configurations)
    if used > s.hardware.total_gpus:
        problems.append(("configurations",
                         f"the configurations need {used} GPUs side by side but hardware has "
                         f"{s.hardware.total_gpus} ({s.hardware.nodes} node(s) × {s.hardware.gpus_per_node}); "
                         "raise hardware.nodes or remove configurations"))
    return problems


def _check_placement(s: Scenario, i: int, c: ParallelConfig) -> Problems:
    """TP stays inside a node; so does a whole replica unless its pipeline stages may spread."""
    if c.tp > s.hardware.gpus_per_node:
        return [(f"configurations[{i}].tp", f"tp={c.tp} exceeds the {s.hardware.gpus_per_node} GPUs of one node; "
                 "TP must stay inside a node")]
    if c.gpus_per_replica > s.hardware.gpus_per_node and not c.spread_pp_over_nodes:
        return [(f"configurations[{i}]", f"tp×pp={c.gpus_per_replica} exceeds one node's "
                 f"{s.hardware.gpus_per_node} GPUs; set spread_pp_over_nodes: true or lower pp")]
    return []


def _check_memory(s: Scenario, i: int, c: ParallelConfig, model: ModelSpec, gpu: GpuSpec | None) -> Problems:
    """The model splits this way, and its weights leave room for KV cache on the GPUs."""
    try:
        check_parallelism(model, c.tp, c.pp)
    except ValueError as e:
        return [(f"configurations[{i}].{'pp' if 'pp=' in str(e) else 'tp'}", str(e))]
    if gpu is None:
        return []
    plan = plan_engine_memory(s.engine, model, gpu, s.dtype, s.resolved_kv_dtype, c.tp, c.pp)
    if plan.fits:
        return []
    total = weight_bytes_per_gpu(model, s.dtype, 1, 1, s.engine.memory_model) / 1e9
    return [(f"configurations[{i}]",
             f"{model.name} {s.dtype.value} needs {total:.0f} GB of weights; {c.name} (tp{c.tp}×pp{c.pp}) gives "
             f"{c.gpus_per_replica}×{gpu.memory_gb:.0f} GB and leaves no room for KV cache; raise tp or pp, "
             "or use a smaller dtype")]


def _check_dtype(s: Scenario, gpu: GpuSpec | None) -> Problems:
    if gpu is None or gpu.supports(s.dtype):
        return []
    try:
        gpu.compute_dtype(s.dtype)
    except ValueError as e:
        return [("dtype", f"{e}; use one of {', '.join(d.value for d in gpu.peak_tflops)}")]
    return []


def _check_classes(s: Scenario, base_dir: Path | None) -> Problems:
    """Shares sum to 1, unique names, length files that exist and parse."""
    problems: Problems = []
    total_share = sum(c.share for c in s.classes)
    if abs(total_share - 1.0) > 1e-6:
        problems.append(("classes", f"class shares sum to {total_share:g}, not 1; adjust the share fields"))
    cnames = [c.name for c in s.classes]
    for i, tc in enumerate(s.classes):
        if cnames.count(tc.name) > 1:
            problems.append((f"classes[{i}].name", f"duplicate class name {tc.name!r}"))
        for which, (field, dist) in enumerate((("input", tc.input), ("output", tc.output))):
            path = getattr(dist, "path", None)
            if path is not None and not resolve_path(path, base_dir).is_file():
                problems.append((f"classes[{i}].{field}.path", f"{path}: no such file"))
            elif path is not None:
                try:
                    mean_length(dist, which, base_dir)
                except LoadError as e:
                    problems.append((f"classes[{i}].{field}.path", str(e)))
    return problems


def _check_server(s: Scenario) -> Problems:
    cnames = [c.name for c in s.classes]
    if s.server.default_class is not None and s.server.default_class not in cnames:
        return [("server.default_class", f"{s.server.default_class!r} is not a class; use one of {', '.join(cnames)}")]
    return []


def _check_load(s: Scenario, base_dir: Path | None) -> Problems:
    trace = getattr(s.load.arrival, "path", None)
    if trace is not None and not resolve_path(trace, base_dir).exists():
        return [("load.arrival.path", f"{trace}: no such file")]
    return schedule_problems(s.classes, s.load)


def _check_repartition(s: Scenario) -> Problems:
    """The GPU budget the repartition policy splits is on the hardware and holds the first split."""
    budget = s.controller.repartition.gpus
    if s.controller.policy != "repartition" or budget is None:
        return []
    if budget > s.hardware.total_gpus:
        return [("controller.repartition.gpus", f"{budget} GPUs, but the hardware has {s.hardware.total_gpus}; give "
                 f"1 to {s.hardware.total_gpus}")]
    used = sum(c.gpus for c in s.configurations)
    if used > budget:
        return [("controller.repartition.gpus", f"the configurations, the first split, need {used} GPUs but the "
                 f"budget is {budget}; raise gpus or deploy fewer configurations")]
    return []


def _check_engine(s: Scenario, gpu: GpuSpec | None, base_dir: Path | None) -> Problems:
    """The sim engine's calibration covers the GPU; the vllm engine has a model folder."""
    problems: Problems = []
    if s.engine.kind == "sim" and gpu is not None:
        problems += _check_calibration(s.engine.calibration, gpu, base_dir)
    if s.engine.kind == "vllm" and not s.engine.model_path:
        problems.append(("engine.model_path", "the vllm engine needs a local model folder; set model_path"))
    return problems


def _absolute_paths(s: Scenario, base_dir: Path | None) -> Scenario:
    """Replicas run in other working directories: a relative model folder or calibration file that exists
    (next to the scenario) becomes absolute, so every reader finds the same file."""
    update = {}
    for field in ("model_path", "calibration"):
        value = getattr(s.engine, field)
        if value and not Path(value).is_absolute():
            local = resolve_path(Path(value), base_dir)
            if local.exists():
                update[field] = str(local.resolve())
    return s.model_copy(update={"engine": s.engine.model_copy(update=update)}) if update else s


def _check_plan(plan: PlanSection, configs: list[str], classes: list[str], policy: str) -> Problems:
    """Every planned pool is a configuration, each configuration in one pool, each class in one pool of each
    deployment; the routing stays as planned (policy observe) so that every deployment gets its share."""
    problems: Problems = []
    seen: list[str] = []
    for i, d in enumerate(plan.deployments):
        for j, pool in enumerate(d.pools):
            if pool.config not in configs:
                problems.append((f"plan.deployments[{i}].pools[{j}].config",
                                 f"{pool.config!r} is not a configuration; use one of {', '.join(configs)}"))
            seen.append(pool.config)
        routed = [c for pool in d.pools for c in pool.classes]
        for c in classes:
            if routed.count(c) != 1:
                problems.append((f"plan.deployments[{i}].pools",
                                 f"class {c!r} is routed to {routed.count(c)} pools; route it to exactly one"))
        for c in set(routed) - set(classes):
            problems.append((f"plan.deployments[{i}].pools", f"{c!r} is not a class; use one of {', '.join(classes)}"))
    for c in configs:
        if seen.count(c) != 1:
            problems.append(("plan.deployments", f"configuration {c!r} is in {seen.count(c)} planned pools; put it in "
                             "exactly one"))
    if policy != "observe":
        problems.append(("controller.policy", f"a planned comparison keeps each class on its planned pools; "
                         f"{policy} would reroute it: set policy: observe, or remove plan:"))
    return problems


def _check_calibration(path: str | None, gpu: GpuSpec, base_dir: Path | None) -> Problems:
    """The sim engine needs constants for the GPU's family, from the defaults or the override file."""
    try:
        cal = DEFAULT_CALIBRATION if path is None else load_calibration(resolve_path(Path(path), base_dir))
        cal.for_gpu(gpu)
    except ValueError as e:
        return [("engine.calibration" if path is not None else "hardware.gpu", str(e))]
    return []
