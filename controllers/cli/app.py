"""The `parallax` command line: a thin layer over the library functions."""

import os
from pathlib import Path

import typer
from rich.table import Table

from controllers.cli.calibration import calibrate_cmd, profile_cmd
from controllers.cli.experiment import compare_cmd, compare_shift_cmd, report_cmd, run_cmd
from controllers.cli.kuberay import kuberay_cmd
from controllers.cli.load import load_cmd, summarize_cmd
from controllers.cli.monitoring import dashboards_app, prometheus_app
from controllers.cli.plan import plan_cmd
from controllers.cli.serve import down_cmd, serve_config_cmd, status_cmd, up_cmd
from controllers.cli.simulate import simulate_cmd
from controllers.cli.terminal import console, fail
from controllers.cli.tiny_model import tiny_model_cmd
from controllers.validate import footprints, node_shapes
from deployments.catalog.memory import describe_memory_model
from deployments.cluster import detected_gpus, local_run_problems
from deployments.resolve import load_scenario
from schema.scenario import ScenarioError

app = typer.Typer(
    help="Parallax: compare TP / PP / hybrid / replicated LLM deployments under SLA-tagged traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Parallax: compare TP / PP / hybrid / replicated LLM deployments under SLA-tagged traffic."""


@app.command()
def validate(scenario: Path = typer.Argument(..., help="scenario YAML file")) -> None:
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
        problems = local_run_problems(r, detected_gpus())
        if problems:
            fail(f"{r.source}: a local run (no RAY_ADDRESS) cannot start here: " + "; ".join(problems))


# In the order a user meets them: check, calibrate, plan, simulate, serve, load, watch, run, report.
app.command("profile")(profile_cmd)
app.command("calibrate")(calibrate_cmd)
app.command("plan")(plan_cmd)
app.command("simulate")(simulate_cmd)
app.command("up")(up_cmd)
app.command("status")(status_cmd)
app.command("down")(down_cmd)
app.command("serve-config")(serve_config_cmd)
app.command("kuberay")(kuberay_cmd)
app.command("load")(load_cmd)
app.command("summarize")(summarize_cmd)
app.add_typer(prometheus_app, name="prometheus")
app.add_typer(dashboards_app, name="dashboards")
app.command("run")(run_cmd)
app.command("report")(report_cmd)
app.command("compare")(compare_cmd)
app.command("compare-shift")(compare_shift_cmd)
app.command("tiny-model")(tiny_model_cmd)

def main() -> None:
    app()


if __name__ == "__main__":
    main()
