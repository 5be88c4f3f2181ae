"""The `parallax` command line: a thin layer over the library functions."""

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from controllers.commands import compare_cmd, report_cmd, run_cmd
from controllers.scenario import ScenarioError, load_scenario
from controllers.validate import footprints
from deployments.catalog.memory import describe_memory_model
from deployments.cli import down_cmd, serve_config_cmd, status_cmd, up_cmd
from deployments.engines.sim.cli import simulate_cmd
from deployments.engines.vllm.cli import tiny_model_cmd
from deployments.kuberay_cli import kuberay_cmd
from loadgen.cli import load_cmd, summarize_cmd
from monitoring.cli import dashboards_app, prometheus_app

app = typer.Typer(
    help="Parallax: compare TP / PP / hybrid / replicated LLM deployments under SLA-tagged traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Parallax: compare TP / PP / hybrid / replicated LLM deployments under SLA-tagged traffic."""


def fail(message: str, code: int = 2) -> None:
    """Print a clear error (no traceback) and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def validate(scenario: Path = typer.Argument(..., help="scenario YAML file")) -> None:
    """Check a scenario and print each configuration's GPUs, weights and KV-cache capacity."""
    try:
        r = load_scenario(scenario)
    except ScenarioError as e:
        fail(str(e))
        return
    s = r.scenario
    console.print(f"[bold]{s.name}[/]: {r.model.name} {s.dtype.value} (KV {s.resolved_kv_dtype.value}) on "
                  f"{s.hardware.nodes}×{s.hardware.gpus_per_node} {r.gpu.name}, engine {s.engine.kind}")
    table = Table("config", "tp", "pp", "replicas", "GPUs", "weights/GPU (GB)", "KV/GPU (GB)",
                  "KV tokens/replica", "seqs/replica", "fits")
    for f in footprints(r):
        table.add_row(f.name, str(f.tp), str(f.pp), str(f.replicas), str(f.gpus),
                      f"{f.weight_gb_per_gpu:.1f}", f"{f.kv_gb_per_gpu:.1f}", f"{f.kv_tokens_per_replica:,}",
                      f"{f.seqs_per_replica:,}", "yes" if f.fits else "[red]no[/]")
    console.print(table)
    note = describe_memory_model(s.engine.memory_model, s.engine.gpu_memory_utilization)
    console.print(note if s.engine.kind == "sim" else f"{note} (vLLM sizes its own; this estimates it)")


# In the order a user meets them: check, simulate, serve, load, watch, run, report.
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
app.command("tiny-model")(tiny_model_cmd)

def main() -> None:
    app()


if __name__ == "__main__":
    main()
