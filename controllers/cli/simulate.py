"""`parallax simulate`: the simulated engine offline, for one configuration or a scenario's sweep.

Its flags and JSON keys are a contract other tools rely on (see the assignment in the README).
"""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import typer
from rich.table import Table

from controllers.cli.terminal import console, fail
from deployments.catalog.gpus import resolve_gpu
from deployments.catalog.models import resolve_model
from deployments.engines.sim.calibration import load_calibration
from deployments.engines.sim.configuration import AggregatedReplicas
from deployments.engines.sim.disagg import DisaggregatedReplicas
from deployments.engines.sim.plot import plot_sweep
from deployments.engines.sim.replica import ReplicaFactory
from deployments.engines.sim.simulate import simulate_continuous, simulate_static
from deployments.engines.sim.sweep import SweepPoint, simulate_scenario
from deployments.placement import role_nodes
from deployments.resolve import load_scenario
from schema.deployment import Disaggregation, EngineConfig, Hardware, MemoryModel, ParallelConfig
from schema.dtypes import Dtype, parse_dtype
from schema.scenario import ScenarioError


def simulate_cmd(
    model: str = typer.Option(None, "--model", help="catalog model or a Hugging Face config.json"),
    gpu: str = typer.Option(None, "--gpu", help="catalog GPU or a YAML GPU spec"),
    dtype: str = typer.Option("bf16", "--dtype", help="weight dtype: bf16, fp16, fp8, fp4, fp32"),
    kv_dtype: str = typer.Option(None, "--kv-dtype", help="KV-cache dtype (default bf16; fp32 for fp32)"),
    tp: int = typer.Option(1, "--tp", min=1),
    pp: int = typer.Option(1, "--pp", min=1),
    replicas: int = typer.Option(1, "--replicas", min=1, help="data-parallel copies, least-loaded dispatch"),
    prefill_tp: int = typer.Option(None, "--prefill-tp", min=1, help="disaggregated: TP of each prefill replica"),
    prefill_pp: int = typer.Option(None, "--prefill-pp", min=1, help="disaggregated: PP of each prefill replica"),
    prefill_replicas: int = typer.Option(None, "--prefill-replicas", min=1, help="disaggregated: prefill replicas"),
    decode_tp: int = typer.Option(None, "--decode-tp", min=1, help="disaggregated: TP of each decode replica"),
    decode_pp: int = typer.Option(None, "--decode-pp", min=1, help="disaggregated: PP of each decode replica"),
    decode_replicas: int = typer.Option(None, "--decode-replicas", min=1, help="disaggregated: decode replicas "
                                        "(replicas fill 8-GPU nodes in order, prefill first; a KV handoff between "
                                        "nodes goes through the NICs)"),
    input_len: int = typer.Option(None, "--input-len", min=1, help="prompt tokens per request"),
    output_len: int = typer.Option(None, "--output-len", min=1, help="output tokens per request"),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="static-batch mode (the study's method)"),
    concurrency: int = typer.Option(None, "--concurrency", min=1, help="closed loop of C users"),
    request_rate: float = typer.Option(None, "--request-rate", min=0.0, help="Poisson arrivals, requests/s"),
    max_throughput: bool = typer.Option(False, "--max-throughput", help="queue every request at t=0"),
    num_requests: int = typer.Option(1000, "--num-requests", min=1),
    seed: int = typer.Option(0, "--seed"),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", min=1),
    max_num_batched_tokens: int = typer.Option(8192, "--max-num-batched-tokens", min=1),
    gpu_memory_utilization: float = typer.Option(
        None, "--gpu-memory-utilization", min=0.0, max=1.0,
        help="share of HBM the engine may use, as vLLM's flag (default 0.9; memory model vllm)"),
    memory_model: str = typer.Option(
        "vllm", "--memory-model", help="size the KV cache as vLLM does ('vllm') or as the study does ('study': "
        "all HBM for weights and KV cache)"),
    calibration: Path = typer.Option(None, "--calibration", help="calibration file (`parallax calibrate`); with "
                                     "--scenario it replaces engine.calibration"),
    scenario: Path = typer.Option(None, "--scenario", help="sweep every configuration of a scenario file"),
    plot: Path = typer.Option(None, "--plot", help="with --scenario: write latency-throughput curves (PNG)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Simulate a TP×PP deployment offline (virtual time): static batch, or continuous batching under load;
    or a disaggregated one (--prefill-* / --decode-*: prefill replicas hand each prompt's KV cache to decode
    replicas) under load."""
    cal = None
    if calibration is not None:
        try:
            cal = load_calibration(calibration)
        except ValueError as e:
            fail(str(e))
    if scenario is not None:
        _scenario(scenario, plot, seed, as_json, calibration)
        return
    if plot is not None:
        fail("--plot draws a scenario's sweep; give --scenario FILE too")
    missing = [flag for flag, v in (("--model", model), ("--gpu", gpu), ("--input-len", input_len),
                                    ("--output-len", output_len)) if v is None]
    if missing:
        fail(f"missing {', '.join(missing)} (or give --scenario FILE)")
    modes = [flag for flag, on in (("--batch-size", batch_size is not None), ("--concurrency", concurrency is not None),
                                   ("--request-rate", request_rate is not None), ("--max-throughput", max_throughput))
             if on]
    if len(modes) != 1:
        fail("give exactly one of --batch-size, --concurrency, --request-rate, --max-throughput"
              + (f" (got {', '.join(modes)})" if modes else ""))
    if request_rate is not None and request_rate <= 0:
        fail("--request-rate must be > 0 requests/s")
    roles = {"prefill": (prefill_tp, prefill_pp, prefill_replicas), "decode": (decode_tp, decode_pp, decode_replicas)}
    disagg = None
    if any(v is not None for shape in roles.values() for v in shape):
        if (tp, pp, replicas) != (1, 1, 1):
            fail("give --tp/--pp/--replicas (aggregated) or --prefill-*/--decode-* (disaggregated), not both")
        if batch_size is not None:
            fail("--batch-size is the study's static batch on aggregated replicas; a disaggregated configuration "
                 "runs under load: give --concurrency, --request-rate or --max-throughput")
        keys = ("tp", "pp", "replicas")
        disagg = Disaggregation.model_validate(
            {role: {k: v for k, v in zip(keys, shape, strict=True) if v is not None} for role, shape in roles.items()})
    node = Hardware.model_fields["gpus_per_node"].default
    for flag, t in (("--tp", tp), ("--prefill-tp", prefill_tp), ("--decode-tp", decode_tp)):
        if t is not None and t > node:
            fail(f"{flag} {t} exceeds the {node} GPUs of one node; TP must stay inside a node")
    try:
        m = resolve_model(model)
        g = resolve_gpu(gpu)
        d = parse_dtype(dtype)
        kv = parse_dtype(kv_dtype) if kv_dtype else (Dtype.fp32 if d == Dtype.fp32 else Dtype.bf16)
        engine = _engine(max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, memory_model, seed)
        if disagg is not None:
            cfg = ParallelConfig(name="simulate", disagg=disagg)
            nodes = role_nodes(cfg, node)
            pair = DisaggregatedReplicas(
                *(ReplicaFactory(m, g, d, kv, r.tp, r.pp, engine, cal, role=role)
                  for role, r in (("prefill", disagg.prefill), ("decode", disagg.decode))),
                disagg.prefill.replicas, disagg.decode.replicas, (nodes["prefill"], nodes["decode"]))
            out = simulate_continuous(pair, input_len, output_len, num_requests, concurrency, request_rate, seed)
            shape: dict[str, Any] = {"disagg": disagg.model_dump()}
        else:
            factory = ReplicaFactory(m, g, d, kv, tp, pp, engine, cal)
            if batch_size is not None:
                out = simulate_static(factory, batch_size, input_len, output_len, replicas)
            else:
                out = simulate_continuous(AggregatedReplicas(factory, replicas), input_len, output_len,
                                          num_requests, concurrency, request_rate, seed)
            shape = {"tp": tp, "pp": pp, "replicas": replicas}
    except ValueError as e:
        fail(str(e))
    out = {"model": m.name, "gpu": g.name, "dtype": d.value, "kv_dtype": kv.value, **shape,
           "input_len": input_len, "output_len": output_len, **out}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        _print_one(out)


def _engine(max_num_seqs: int, max_num_batched_tokens: int, gpu_memory_utilization: float | None,
            memory_model: str, seed: int) -> EngineConfig:
    """The engine settings of the flags; ValueError naming the flag when they do not go together."""
    if memory_model not in get_args(MemoryModel):
        raise ValueError(f"--memory-model {memory_model!r}: use one of {', '.join(get_args(MemoryModel))}")
    if memory_model == "study" and gpu_memory_utilization is not None:
        raise ValueError("--gpu-memory-utilization does not apply with --memory-model study (it counts all HBM); "
                         "give one of the two")
    kwargs: dict[str, Any] = {"memory_model": memory_model}
    if gpu_memory_utilization is not None:
        if gpu_memory_utilization <= 0:
            raise ValueError("--gpu-memory-utilization must be in (0, 1]")
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    return EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, seed=seed, **kwargs)


def _print_one(out: dict[str, Any]) -> None:
    roles = out.get("disagg")
    shape = (" + ".join(f"{r['replicas']} × {role} tp{r['tp']}×pp{r['pp']}" for role, r in roles.items()) if roles
             else f"tp{out['tp']}×pp{out['pp']} × {out['replicas']}")
    console.print(f"[bold]{out['model']}[/] {out['dtype']} (KV {out['kv_dtype']}) {shape}"
                  f" on {out['gpu']}, {out['input_len']} in / {out['output_len']} out, "
                  f"mode {out['mode']}, KV cache sized by the {out['memory_model']} memory model")
    table = Table("metric", "value", "p50", "p90", "p99")
    for key, v in out.items():
        if isinstance(v, dict) and {"mean", "p50"} <= v.keys():
            table.add_row(key, f"{v['mean']:.1f}", f"{v['p50']:.1f}", f"{v['p90']:.1f}", f"{v['p99']:.1f}")
        elif isinstance(v, float) and key not in ("input_len", "output_len"):
            table.add_row(key, f"{v:,.2f}", "", "", "")
        elif isinstance(v, int) and key in ("max_batch", "global_batch", "kv_cache_tokens", "preemptions",
                                            "num_requests", "batch_size", "waves"):
            table.add_row(key, f"{v:,}", "", "", "")
    console.print(table)
    shares = out["breakdown"]
    phases = shares if all(isinstance(v, dict) for v in shares.values()) else {"time": shares}
    for phase, terms in phases.items():
        parts = ", ".join(f"{k} {v:.0%}" for k, v in sorted(terms.items(), key=lambda kv: -kv[1]) if v >= 0.005)
        console.print(f"{phase} breakdown: {parts}")


def _scenario(path: Path, plot: Path | None, seed: int, as_json: bool, calibration: Path | None) -> None:

    try:
        resolved = load_scenario(path)
        if calibration is not None:   # --calibration replaces the scenario's engine.calibration
            s = resolved.scenario
            engine = s.engine.model_copy(update={"calibration": str(calibration.resolve())})
            resolved = replace(resolved, scenario=s.model_copy(update={"engine": engine}))
        points = simulate_scenario(resolved, seed=seed)
    except (ScenarioError, ValueError) as e:
        fail(str(e))
    if plot is not None:

        plot_sweep(points, plot, title=f"{resolved.scenario.name}: {resolved.model.name} on {resolved.gpu.name}")
    if as_json:
        typer.echo(json.dumps([_point_json(p) for p in points], indent=2))
        return
    _print_sweep(points, list(points[0].classes) if points else [])
    if plot is not None:
        console.print(f"curves written to {plot}")


def _point_json(p: SweepPoint) -> dict[str, Any]:
    roles = {"disagg": p.disagg} if p.disagg else {}
    return {"config": p.config, "tp": p.tp, "pp": p.pp, "replicas": p.replicas, **roles, "rate": p.rate,
            **p.summary, "classes": p.classes}


def _print_sweep(points: list[SweepPoint], classes: list[str]) -> None:
    table = Table("config", "rate", "req/s", "tok/s", "TTFT p50", "TTFT p90", "TPOT p50", "TPOT p90", "preempt",
                  *(f"{c} SLO" for c in classes))
    for p in points:
        s = p.summary
        table.add_row(p.config, f"{p.rate:g}", f"{s['requests_per_s']:.2f}", f"{s['output_tokens_per_s']:,.0f}",
                      f"{s['ttft_ms']['p50']:.0f}", f"{s['ttft_ms']['p90']:.0f}", f"{s['tpot_ms']['p50']:.1f}",
                      f"{s['tpot_ms']['p90']:.1f}", str(s["preemptions"]),
                      *(f"{p.classes[c]['slo_attainment']:.0%}" for c in classes))
    console.print(table)
