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
from loadgen.lengths import longest_length, mean_length
from schema.deployment import ParallelConfig, ReplicaGroup
from schema.faults import fault_problems
from schema.plan import PlanSection
from schema.scenario import Scenario, ScenarioError, read_scenario_data, scenario_from_data
from schema.traffic import PHASE_ARRIVALS, schedule_problems


@dataclass(frozen=True)
class Resolved:
    """A validated scenario with its catalog entries looked up."""

    scenario: Scenario
    model: ModelSpec
    gpu: GpuSpec
    source: str


def parse_scenario(data: object, source: str = "<scenario>", base_dir: Path | None = None,
                   need_configurations: bool = True, serving: bool = False) -> Resolved:
    """Validate already-loaded YAML data and resolve its catalog references (`need_configurations=False`:
    a scenario to plan, whose configurations are optional; `serving`: to deploy live)."""
    return check_scenario(scenario_from_data(data, source), source, base_dir, need_configurations, serving)


def load_scenario(path: str | Path, need_configurations: bool = True, serving: bool = False) -> Resolved:
    """Read, validate and resolve a scenario YAML file (configurations optional when planning; `serving`: to
    deploy live, which refuses what only the simulator runs)."""
    p = Path(path)
    return parse_scenario(read_scenario_data(p), str(p), p.parent, need_configurations, serving)


Problems = list[tuple[str, str]]


def check_scenario(s: Scenario, source: str = "<scenario>", base_dir: Path | None = None,
                   need_configurations: bool = True, serving: bool = False) -> Resolved:
    """Checks that need the catalog or span several fields: one checker per section of the file
    (`need_configurations=False`: a scenario to plan, whose configurations are optional; `serving`: to deploy
    live)."""
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
    problems += _check_configurations(s, model, gpu, serving, base_dir)
    problems += _check_dtype(s, gpu)
    problems += _check_classes(s, base_dir)
    problems += _check_server(s)
    problems += _check_load(s, base_dir)
    problems += _check_repartition(s)
    problems += _check_engine(s, gpu, base_dir)
    problems += fault_problems(s.faults, s, s.classes, s.load, s.monitoring)
    if s.plan is not None:
        problems += _check_plan(s.plan, [c.name for c in s.configurations], [c.name for c in s.classes],
                                s.controller.policy)
    if problems or model is None or gpu is None:
        raise ScenarioError(source, problems)
    return Resolved(scenario=_absolute_paths(s, base_dir), model=model, gpu=gpu, source=source)


def _check_configurations(s: Scenario, model: ModelSpec | None, gpu: GpuSpec | None, serving: bool,
                          base_dir: Path | None) -> Problems:
    """Unique names, TP inside a node, a split the model allows, room for KV cache (per role), GPUs enough for
    all; a disaggregated configuration's roles hold the longest requests, and it is not served live (yet)."""
    problems: Problems = []
    names = [c.name for c in s.configurations]
    for i, c in enumerate(s.configurations):
        if names.count(c.name) > 1:
            problems.append((f"configurations[{i}].name", f"duplicate configuration name {c.name!r}"))
        if serving and c.disagg is not None:
            problems.append((f"configurations[{i}].disagg",
                             "a disaggregated configuration is simulated (`parallax validate`, `simulate`) but not "
                             "served live yet; remove it, or give it tp, pp and replicas instead of disagg"))
        shape: Problems = []
        for g in c.groups:
            shape += _check_placement(s, i, g)
            if model is not None:
                shape += _check_memory(s, i, c.name, g, model, gpu)
        if c.disagg is not None and model is not None and gpu is not None and not shape:
            shape += _check_roles(s, i, c, model, gpu, base_dir)
        problems += shape
    used = sum(c.gpus for c in s.configurations)
    if used > s.hardware.total_gpus:
        problems.append(("configurations",
                         f"the configurations need {used} GPUs side by side but hardware has "
                         f"{s.hardware.total_gpus} ({s.hardware.nodes} node(s) × {s.hardware.gpus_per_node}); "
                         "raise hardware.nodes or remove configurations"))
    return problems


def _check_placement(s: Scenario, i: int, g: ReplicaGroup) -> Problems:
    """TP stays inside a node; so does a whole replica unless its pipeline stages may spread."""
    at = f"configurations[{i}].{g.field}"
    if g.tp > s.hardware.gpus_per_node:
        return [(at + "tp", f"tp={g.tp} exceeds the {s.hardware.gpus_per_node} GPUs of one node; "
                 "TP must stay inside a node")]
    if g.gpus_per_replica > s.hardware.gpus_per_node and not g.spread_pp_over_nodes:
        return [(at.rstrip("."), f"tp×pp={g.gpus_per_replica} exceeds one node's {s.hardware.gpus_per_node} GPUs; "
                 f"set spread_pp_over_nodes: true or lower {g.field}pp")]
    return []


def _check_memory(s: Scenario, i: int, name: str, g: ReplicaGroup, model: ModelSpec,
                  gpu: GpuSpec | None) -> Problems:
    """The model splits this way, and its weights leave room for KV cache on the GPUs."""
    at = f"configurations[{i}].{g.field}"
    try:
        check_parallelism(model, g.tp, g.pp)
    except ValueError as e:
        return [(at + ("pp" if "pp=" in str(e) else "tp"), str(e))]
    if gpu is None:
        return []
    plan = plan_engine_memory(s.engine, model, gpu, s.dtype, s.resolved_kv_dtype, g.tp, g.pp)
    if plan.fits:
        return []
    total = weight_bytes_per_gpu(model, s.dtype, 1, 1, s.engine.memory_model) / 1e9
    return [(at.rstrip("."),
             f"{model.name} {s.dtype.value} needs {total:.0f} GB of weights; {g.label(name)} gives "
             f"{g.gpus_per_replica}×{gpu.memory_gb:.0f} GB and leaves no room for KV cache; raise "
             f"{g.field}tp or {g.field}pp, or use a smaller dtype")]


def _check_roles(s: Scenario, i: int, c: ParallelConfig, model: ModelSpec, gpu: GpuSpec,
                 base_dir: Path | None) -> Problems:
    """Each role's replicas hold what they must (`role_problem`)."""
    problems: Problems = []
    for g in c.groups:
        problem = role_problem(s, g, c.name, model, gpu, base_dir)
        if problem is not None:
            problems.append((f"configurations[{i}].{g.field}".rstrip("."), problem))
    return problems


def role_problem(s: Scenario, g: ReplicaGroup, config: str, model: ModelSpec, gpu: GpuSpec,
                 base_dir: Path | None) -> str | None:
    """Why a replica of one role of configuration `config` cannot serve the scenario's classes, if it cannot: a
    prefill replica holds the longest prompt's KV cache until its decode replica has it; a decode replica holds
    the longest prompt and output together. (None too when a lengths file is unreadable: `_check_classes`
    reports that.)"""
    try:
        prompt = max(longest_length(tc.input, 0, base_dir) for tc in s.classes)
        output = max(longest_length(tc.output, 1, base_dir) for tc in s.classes)
    except LoadError:
        return None
    plan = plan_engine_memory(s.engine, model, gpu, s.dtype, s.resolved_kv_dtype, g.tp, g.pp)
    limits = {"KV cache": plan.kv_tokens, "engine.max_model_len": s.engine.max_model_len or model.max_context}
    limit = min(limits, key=lambda k: limits[k])
    fix = (f"raise {g.field}tp or {g.field}pp, or use a smaller kv_dtype" if limit == "KV cache"
           else "raise engine.max_model_len" if s.engine.max_model_len else "use a longer-context model")
    if g.role == "prefill":
        need, what = prompt + 1, f"the longest prompt ({prompt:,} tokens) and its first token"
    else:
        need, what = prompt + output, f"the longest request ({prompt:,} prompt + {output:,} output tokens)"
    if limits[limit] >= need:
        return None
    return (f"a replica of {g.label(config)} holds {limits[limit]:,} tokens ({limit}) but must hold {what}; {fix}, "
            "or shorten the classes' lengths")


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
    """What the repartition policy needs: one open arrival stream to plan the traffic's rate for, configurations it
    can re-plan (aggregated TP×PP), and a GPU budget on the hardware that holds the first split."""
    if s.controller.policy != "repartition":
        return []
    problems: Problems = []
    if s.load.arrival.kind not in PHASE_ARRIVALS:
        problems.append(("load.arrival.kind", f"policy repartition plans for the traffic's rate as one open arrival "
                         f"stream; a {s.load.arrival.kind} arrival has no rate: use {', '.join(PHASE_ARRIVALS)}, or "
                         "another policy"))
    for i, c in enumerate(s.configurations):
        if c.disagg is not None:
            problems.append((f"configurations.{i}.disagg", f"{c.name} is disaggregated: policy repartition re-plans "
                             "TP×PP pools and cannot price or move a prefill/decode pair; give it tp, pp and replicas, "
                             "or use another policy"))
    budget = s.controller.repartition.gpus
    if budget is None:
        return problems
    if budget > s.hardware.total_gpus:
        return [*problems, ("controller.repartition.gpus", f"{budget} GPUs, but the hardware has "
                            f"{s.hardware.total_gpus}; give 1 to {s.hardware.total_gpus}")]
    used = sum(c.gpus for c in s.configurations)
    if used > budget:
        problems.append(("controller.repartition.gpus", f"the configurations, the first split, need {used} GPUs but "
                         f"the budget is {budget}; raise gpus or deploy fewer configurations"))
    return problems


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
