"""`parallax kuberay SCENARIO`: write the RayService manifest of a scenario."""

from pathlib import Path

import typer

from controllers.cli.terminal import err_console, fail
from deployments.kuberay import PodSize, default_sizes, rayservice_manifest, to_yaml
from deployments.resolve import load_scenario
from schema.scenario import ScenarioError


def kuberay_cmd(
    scenario: Path = typer.Argument(..., help="scenario YAML file"),
    output: Path = typer.Option(None, "--output", "-o", help="file to write (default: stdout)"),
    image: str = typer.Option(..., help="container image with Ray 2.60 and this package installed"),
    api_key_secret: str = typer.Option(None, help="Secret holding the API key (key `api-key`), when "
                                                  "server.api_key_env is set (default: <name>-api-key)"),
    hf_token_secret: str = typer.Option(None, help="Secret holding a Hugging Face token (key `token`) for the "
                                                   "vllm engine's GPU pods; optional (default: <name>-hf-token)"),
    worker_cpus: int = typer.Option(None, help="CPUs per GPU worker pod (default: one per GPU + 2)"),
    worker_memory: str = typer.Option(None, help="memory per GPU worker pod, e.g. 512Gi"),
) -> None:
    """Write a KubeRay RayService manifest: head + GPU workers sized from the scenario's hardware."""

    try:
        r = load_scenario(scenario, serving=True)
    except ScenarioError as e:
        fail(str(e))
    head, worker = default_sizes(r)
    worker = PodSize(cpus=worker_cpus or worker.cpus, memory=worker_memory or worker.memory)
    text = to_yaml(rayservice_manifest(r, image, head, worker, api_key_secret, hf_token_secret))
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        err_console.print(f"wrote {output}; apply it with `kubectl apply -f {output}` (KubeRay operator installed)")
