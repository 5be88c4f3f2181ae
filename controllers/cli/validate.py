"""`parallax validate SCENARIO`: check a scenario and print what each configuration holds per GPU."""

import os
from pathlib import Path

import typer
from rich.table import Table

from controllers.cli.terminal import console, fail
from controllers.validate import footprints, node_shapes
from deployments.catalog.memory import describe_memory_model
from deployments.local_gpus import local_run_problems
from deployments.resolve import load_scenario
from schema.scenario import ScenarioError


def validate_cmd(scenario: Path = typer.Argument(..., help="scenario YAML file")) -> None:
    """Check a scenario and print each configuration's GPUs, weights and KV-cache capacity (without
    configurations: every TP×PP split of a node, the shapes `parallax plan` chooses from)."""
    try:
        r = load_scenario(scenario, need_configurations=False)
    except ScenarioError as e:
        fail(str(e))
    s = r.scenario
    console.print(f"[bold]{s.name}[/]: {r.model.name} {s.dtype.value} (KV {s.resolved_kv_dtype.value}) on "
                  f"{s.hardware.nodes}×{s.hardware.gpus_per_node} {r.gpu.name}, engine {s.engine.kind}")
    shapes = None if s.configurations else node_shapes(r)
    if shapes is not None:
        console.print(f"no configurations: a question for `parallax plan {scenario}`; the splits of one node it "
                      "chooses from:", highlight=False)
    table = Table("config", "tp", "pp", "replicas", "GPUs", "weights/GPU (GB)", "KV/GPU (GB)",
                  "KV tokens/replica", "seqs/replica", "fits")
    for f in footprints(r, shapes):
        table.add_row(f"{f.name} {f.role}" if f.role else f.name, str(f.tp), str(f.pp), str(f.replicas), str(f.gpus),
                      f"{f.weight_gb_per_gpu:.1f}", f"{f.kv_gb_per_gpu:.1f}", f"{f.kv_tokens_per_replica:,}",
                      f"{f.seqs_per_replica:,}", "yes" if f.fits else "[red]no[/]")
    console.print(table)
    note = describe_memory_model(s.engine.memory_model, s.engine.gpu_memory_utilization)
    console.print(note if s.engine.kind == "sim" else f"{note} (vLLM sizes its own; this estimates it)")
    if not os.environ.get("RAY_ADDRESS"):  # `up` and `run` would start a Ray on this machine
        problems = local_run_problems(r)
        if problems:
            fail(f"{r.source}: a local run (no RAY_ADDRESS) cannot start here: " + "; ".join(problems))


