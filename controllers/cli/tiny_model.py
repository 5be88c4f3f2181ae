"""`parallax tiny-model DIR`: write the tiny random-weight Llama that CPU runs of the vllm engine serve."""

from pathlib import Path

import typer
from rich.console import Console

from deployments.engines.vllm.tiny_model import TinyLlamaSpec, write_tiny_model


def tiny_model_cmd(
    directory: Path = typer.Argument(..., help="folder to write config.json, weights and tokenizer into"),
    force: bool = typer.Option(False, "--force", help="rewrite even when the folder already holds the model"),
    seed: int = typer.Option(0, help="seed of the random weights and of the tokenizer's training text"),
) -> None:
    """Write a tiny random-weight Llama (hidden 256, 4 layers, vocab 1024) for CPU runs of real vLLM."""
    if directory.exists() and not directory.is_dir():
        Console(stderr=True).print(f"[bold red]error:[/] {directory}: exists and is not a folder; give a folder path")
        raise typer.Exit(2)
    out = write_tiny_model(directory, TinyLlamaSpec(seed=seed), force=force)
    Console().print(f"tiny model in {out} (use it as `model:` and `engine.model_path:` in a scenario)")
