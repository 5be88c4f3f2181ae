"""`parallax profile` and `parallax calibrate`: time this machine's accelerator, fit the simulator to
measurements."""

from pathlib import Path

import typer
from rich.table import Table

from controllers.cli.terminal import comma_ints, console, fail
from deployments.catalog.gpus import resolve_gpu
from deployments.catalog.models import resolve_model
from deployments.engines.sim.calibrate import (
    BenchContext,
    calibrate,
    calibration_yaml,
    device_spec_yaml,
    gather,
)
from deployments.engines.sim.fit import FitResult
from deployments.engines.sim.profile_data import write_profile
from deployments.engines.sim.vllm_bench import LatencyShape
from schema.deployment import EngineConfig
from schema.dtypes import parse_dtype


def profile_cmd(
    model: str = typer.Option(..., "--model", help="catalog model or a Hugging Face config.json / model folder"),
    tp: int = typer.Option(1, "--tp", min=1, help="time one rank's shard of a TP-way split"),
    dtype: list[str] = typer.Option(["bf16"], "--dtype", help="weight dtype(s) of the GEMMs: bf16, fp8 (repeat)"),
    device: str = typer.Option("auto", "--device", help="auto, cuda (also ROCm) or cpu"),
    gpu: str = typer.Option(None, "--gpu", help="the catalog GPU (or spec) this is; default: by device name"),
    family: str = typer.Option(None, "--family", help="family name of a device the catalog lacks"),
    tokens: str = typer.Option("1,2,4,8,16,32,64,128,256,512,1024,2048,4096,8192", "--tokens",
                               help="GEMM / element-wise rows to time"),
    contexts: str = typer.Option("512,2048,8192", "--contexts", help="attention context lengths"),
    batches: str = typer.Option("1,16,64", "--decode-batches", help="decode-attention batch sizes"),
    repeats: int = typer.Option(10, "--repeats", min=1, help="timings per operation (the median is kept)"),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU: torch threads (default: torch's)"),
    output: Path = typer.Option(Path("profile.yaml"), "-o", "--output", help="profile file to write"),
) -> None:
    """Time the operations the simulator prices on this machine's accelerator; write a profile."""
    try:   # torch is an optional dependency (the [cpu] and [vllm] extras)
        import torch

        from deployments.engines.sim.profiler import ProfileSettings, profile_model
    except ImportError:
        fail("parallax profile needs torch: install it, or the [cpu] / [vllm] extra (pip install -e '.[cpu]')")
    try:
        m = resolve_model(model)
        dtypes = [parse_dtype(d) for d in dtype]
        g = resolve_gpu(gpu) if gpu else None
        if threads:
            torch.set_num_threads(threads)
        settings = ProfileSettings(comma_ints("--tokens", tokens), comma_ints("--contexts", contexts),
                                   comma_ints("--decode-batches", batches), repeats)
        result = profile_model(m, tp, dtypes, device, g, family, settings, log=console.print)
    except ValueError as e:
        fail(str(e))
    write_profile(output, result)
    d = result.device
    console.print(f"{d.name} ({d.family}, {result.device_from}): {len(result.records)} timings written to {output}")
    console.print("fitted from it: " + ", ".join(f"{k} {v:.3g}" for k, v in result.fitted.items()) + "; median "
                  "|error| " + ", ".join(f"{k} {v:.1%}" for k, v in result.fit_errors.items()))
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"next: parallax calibrate {output} [RUN_FOLDER | vllm bench JSON …] -o calibration.yaml")


def calibrate_cmd(
    inputs: list[Path] = typer.Argument(..., help="profiles, vllm bench JSONs, run folders, published CSV/YAML"),
    gpu: str = typer.Option(None, "--gpu", help="the device calibrated: catalog GPU or YAML spec (default: a "
                            "profile's)"),
    family: str = typer.Option(None, "--family", help="name the fitted family (a new device's own)"),
    model: str = typer.Option(None, "--model", help="model of vllm bench results (and run folders whose path moved)"),
    dtype: str = typer.Option("bf16", "--dtype", help="vllm bench results: weight dtype"),
    kv_dtype: str = typer.Option(None, "--kv-dtype", help="vllm bench results: KV-cache dtype"),
    tp: int = typer.Option(1, "--tp", min=1, help="vllm bench results: TP"),
    pp: int = typer.Option(1, "--pp", min=1, help="vllm bench results: PP"),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", min=1, help="vllm bench results: engine's"),
    max_num_batched_tokens: int = typer.Option(8192, "--max-num-batched-tokens", min=1),
    input_len: int = typer.Option(None, "--input-len", min=1, help="vllm bench latency: prompt tokens"),
    output_len: int = typer.Option(None, "--output-len", min=1, help="vllm bench latency: output tokens"),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="vllm bench latency: batch"),
    free: str = typer.Option(None, "--free", help="constants to fit, comma-separated (default: what the inputs "
                             "pin)"),
    keep: str = typer.Option("", "--keep", help="constants to keep at their current value, comma-separated"),
    output: Path = typer.Option(Path("calibration.yaml"), "-o", "--output", help="calibration file to write"),
    device_spec_out: Path = typer.Option(None, "--device-spec-out", help="also write the device's GPU spec YAML"),
) -> None:
    """Fit the simulator's constants for one GPU kind to your measurements; write a calibration file."""
    try:
        context = BenchContext(
            model=resolve_model(model) if model else None, dtype=parse_dtype(dtype),
            kv_dtype=parse_dtype(kv_dtype) if kv_dtype else None, tp=tp, pp=pp,
            engine=EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens),
            latency=LatencyShape(input_len, output_len, batch_size))
        gathered = gather(inputs, resolve_gpu(gpu) if gpu else None, context)
        result, notes = calibrate(gathered, family, free.split(",") if free else None,
                                  [k for k in keep.split(",") if k])
    except ValueError as e:   # IllPosedFit included: its message names the measurement to add
        fail(str(e))
    _print_fit(result)
    for note in [*gathered.notes, *notes, *result.notes]:
        console.print(f"note: {note}")
    output.write_text(calibration_yaml(result, inputs))
    console.print(f"calibration of {result.family} written to {output}: parallax simulate --calibration {output} …")
    if device_spec_out is not None:
        device_spec_out.write_text(device_spec_yaml(gathered.device, result.family))
        console.print(f"device spec written to {device_spec_out}: parallax simulate --gpu {device_spec_out} …")


def _figure(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _print_fit(result: FitResult) -> None:
    table = Table("measurement", "measured", "predicted", "error", "leave-one-out", title=f"{result.family}: "
                  "every point, in-sample and predicted by a fit without it")
    for p in result.points:
        o = p.observation
        loo = f"{p.loo_error:+.1%}" if p.loo_error is not None else "-"
        table.add_row(o.label, f"{_figure(o.metric.shown(o.measured))} {o.metric.unit}",
                      _figure(o.metric.shown(p.predicted)), f"{p.error:+.1%}", loo if o.fit else "held out")
    console.print(table)
    med = {w: result.median_error(w) for w in ("fit", "loo", "held-out")}
    console.print("median |error|: " + ", ".join(f"{w} {m:.1%}" for w, m in med.items() if m is not None))
    console.print("constants: " + ", ".join(f"{n} {getattr(result.base, n):.4g} → {getattr(result.constants, n):.4g}"
                                            for n in result.free))
