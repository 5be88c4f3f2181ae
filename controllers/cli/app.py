"""The `parallax` command line: a thin layer over the library functions.

Each command lives in a module of controllers.cli, imported only when that command runs (`LazyCommandGroup`):
`parallax --help` answers without loading Ray, matplotlib or the report."""

import typer

from controllers.cli.lazy import LazyCommand, LazyCommandGroup

# In the order a user meets them: check, calibrate, plan, simulate, serve, load, watch, run, report.
COMMANDS: dict[str, LazyCommand] = {
    "validate": LazyCommand("controllers.cli.validate", "validate_cmd",
                            "Check a scenario and print each configuration's GPUs, weights and KV-cache capacity "
                            "(without configurations: every TP×PP split of a node, the shapes `parallax plan` "
                            "chooses from)."),
    "profile": LazyCommand("controllers.cli.calibration", "profile_cmd",
                           "Time the operations the simulator prices on this machine's accelerator; write a "
                           "profile."),
    "calibrate": LazyCommand("controllers.cli.calibration", "calibrate_cmd",
                             "Fit the simulator's constants for one GPU kind to your measurements; write a "
                             "calibration file."),
    "plan": LazyCommand("controllers.cli.plan", "plan_cmd",
                        "Search every TP×PP split of the GPU budget, homogeneous or per SLA class, for the "
                        "scenario's traffic."),
    "simulate": LazyCommand("controllers.cli.simulate", "simulate_cmd",
                            "Simulate a TP×PP deployment offline (virtual time): static batch, or continuous "
                            "batching under load; or a disaggregated one (--prefill-* / --decode-*)."),
    "up": LazyCommand("controllers.cli.serve", "up_cmd",
                      "Start a local Ray (or attach to RAY_ADDRESS), deploy every configuration, print the "
                      "endpoint."),
    "status": LazyCommand("controllers.cli.serve", "status_cmd",
                          "Show what `parallax up` started: endpoint, health, routing and placement of each "
                          "configuration."),
    "down": LazyCommand("controllers.cli.serve", "down_cmd",
                        "Stop what `parallax up` started: Serve, the local Ray, temp files."),
    "serve-config": LazyCommand("controllers.cli.serve", "serve_config_cmd",
                                "Write a Ray Serve config YAML for `serve deploy` on an existing cluster."),
    "kuberay": LazyCommand("controllers.cli.kuberay", "kuberay_cmd",
                           "Write a KubeRay RayService manifest: head + GPU workers sized from the scenario's "
                           "hardware."),
    "load": LazyCommand("controllers.cli.load", "load_cmd",
                        "Send SLA-tagged streaming traffic to an OpenAI-compatible server and record every "
                        "request."),
    "summarize": LazyCommand("controllers.cli.load", "summarize_cmd",
                             "Re-score saved records (optionally against other SLOs) and print the summary."),
    "prometheus": LazyCommand("controllers.cli.monitoring", "prometheus_app",
                              "Run (or attach to) the Prometheus that watches a run."),
    "dashboards": LazyCommand("controllers.cli.monitoring", "dashboards_app",
                              "Grafana dashboards generated from code."),
    "run": LazyCommand("controllers.cli.experiment", "run_cmd",
                       "Deploy, drive the scenario's load with the controller routing, write the run folder, "
                       "tear down."),
    "report": LazyCommand("controllers.cli.experiment", "report_cmd",
                          "Re-render report.html (and its figures) from a run folder."),
    "compare": LazyCommand("controllers.cli.experiment", "compare_cmd",
                           "Set several runs side by side (outcome per class and configuration)."),
    "compare-shift": LazyCommand("controllers.cli.experiment", "compare_shift_cmd",
                                 "Set a shifting run beside the best static split and the per-phase oracle, both "
                                 "replayed offline on its requests."),
    "tiny-model": LazyCommand("controllers.cli.tiny_model", "tiny_model_cmd",
                              "Write a tiny random-weight Llama (hidden 256, 4 layers, vocab 1024) for CPU runs of "
                              "real vLLM."),
}


class ParallaxCommands(LazyCommandGroup):
    """parallax's commands, from COMMANDS."""
    table = COMMANDS


app = typer.Typer(
    cls=ParallaxCommands,
    help="Parallax: compare TP / PP / hybrid / replicated LLM deployments under SLA-tagged traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Parallax: compare TP / PP / hybrid / replicated LLM deployments under SLA-tagged traffic."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
