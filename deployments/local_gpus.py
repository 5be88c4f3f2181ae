"""The GPUs of this machine and what a local run (no RAY_ADDRESS) of a scenario needs of them.

Only real vLLM asks how many GPUs this machine has, so Ray's core (its accelerator managers, most of a
second to import) is imported when they are counted: `parallax validate` of a simulated scenario needs no Ray.
"""

import json
import os

from deployments.engines.vllm.model_files import model_path_problem
from deployments.resolve import Resolved


def detected_gpus() -> int:
    """The GPUs Ray finds on this machine, as `ray start` without --num-gpus would advertise them: its
    accelerator manager's count (NVIDIA, AMD …), capped by CUDA_VISIBLE_DEVICES and the like, or the "GPU"
    of RAY_OVERRIDE_RESOURCES (Ray's ResourceAndLabelSpec.resolve)."""
    from ray._private import accelerators, ray_constants  # here: see the module's docstring

    override = json.loads(os.environ.get(ray_constants.RESOURCES_ENVIRONMENT_VARIABLE) or "{}").get("GPU")
    if override is not None:
        return int(override)
    manager = accelerators.get_accelerator_manager_for_resource("GPU")
    if manager is None:
        return 0
    count = manager.get_current_node_num_accelerators()
    visible = manager.get_current_process_visible_accelerator_ids()
    return min(count, len(visible)) if visible is not None else count


def local_gpus(resolved: Resolved, detected: int) -> int:
    """GPUs a local Ray advertises for `resolved` on a machine with `detected` real ones: those for real
    vLLM where the machine has any, else the scenario's logical `nodes × gpus_per_node`."""
    if resolved.scenario.engine.kind == "vllm" and detected > 0:
        return detected
    return resolved.scenario.hardware.total_gpus


def local_run_problems(resolved: Resolved, detected: int | None = None) -> list[str]:
    """Why `resolved` cannot run on a local Ray on this machine with `detected` GPUs (counted here when not
    given; empty: it can). Real vLLM needs its GPUs here and its model folder here; a cluster (RAY_ADDRESS)
    is the fix for the first."""
    s = resolved.scenario
    if s.engine.kind != "vllm":
        return []
    if detected is None:
        detected = detected_gpus()
    problems = []
    need = sum(c.gpus for c in s.configurations)
    if detected > 0 and need > detected:
        problems.append(f"configurations: they need {need} GPUs side by side ({s.hardware.nodes} node(s) × "
                        f"{s.hardware.gpus_per_node} in hardware) but this machine has {detected}; run on a Ray "
                        "cluster that has them (RAY_ADDRESS=HEAD:6379 parallax up|run …), or remove configurations")
    model = s.engine.model_path and model_path_problem(s.engine.model_path)
    if model:
        problems.append(f"engine.model_path: {model}")
    return problems
