"""The profile file `parallax profile` writes, and the observations it gives a fit.

A profile holds the device it ran on (a catalog GPU, or one described from the measurements), the
model and TP degree whose sharded shapes were timed, and per operation the median time of one
layer's kernels: the four GEMMs at M rows (per weight dtype), prefill attention of one prompt,
decode attention of B sequences over a context, element-wise kernels and a device copy (bytes moved).
Stream records shorter than MIN_STREAM_S at the device's peak are launch-bound, not bandwidth-bound:
they stay in the file but do not enter a fit.
"""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.catalog.files import read_yaml
from deployments.catalog.gpus import GpuSpec
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.measurements import KernelOp, KernelTiming, Metric, Observation, Setup
from schema.dtypes import Dtype

PROFILE_KIND = "parallax-profile"
MIN_STREAM_S = 50e-6


class ProfileRecord(BaseModel):
    """One timed operation: the median seconds of one layer's kernels of this kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: KernelOp
    dtype: Dtype = Field(description="GEMMs: the weight dtype; attention and streams: the activations'")
    tokens: int = Field(default=0, ge=0, description="GEMM / element-wise rows, prompt length, or decode batch")
    context: int = Field(default=0, ge=0, description="decode attention: KV tokens each sequence reads")
    bytes: float = Field(default=0.0, ge=0, description="streams: bytes read plus written")
    seconds: float = Field(gt=0)
    name: str = Field(default="", description="which kernels (e.g. copy, elementwise; a GEMM's parts)")
    parts: dict[str, float] = Field(default_factory=dict, description="seconds of each kernel of the record")


class ProfileFile(BaseModel):
    """What `parallax profile` measured, and the constants fitted from it alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["parallax-profile"] = "parallax-profile"
    device: GpuSpec
    device_from: Literal["catalog", "measured"] = Field(
        description="catalog: the datasheet entry of this GPU; measured: peaks are the best measured rates")
    torch: str = ""
    date: str = ""
    model: ModelSpec
    tp: int = Field(gt=0)
    repeats: int = Field(gt=0)
    records: list[ProfileRecord]
    fitted: dict[str, float] = Field(default_factory=dict, description="constants fitted from this profile")
    fit_errors: dict[str, float] = Field(default_factory=dict, description="median |error| in-sample / LOO")
    notes: list[str] = Field(default_factory=list)


def read_profile(path: Path) -> ProfileFile:
    raw = read_yaml(path, "a profile written by `parallax profile`")
    if not isinstance(raw, dict) or raw.get("kind") != PROFILE_KIND:
        raise ValueError(f"{path}: not a profile (expected `kind: {PROFILE_KIND}`); write one with `parallax profile`")
    try:
        return ProfileFile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{path}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def write_profile(path: Path, profile: ProfileFile) -> None:
    path.write_text(f"# Written by `parallax profile` ({profile.date}); read by `parallax calibrate`.\n"
                    + yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False))


def is_fit_record(r: ProfileRecord, device: GpuSpec) -> bool:
    """Streams too short to be bandwidth-bound stay out of a fit."""
    return r.op != KernelOp.stream or r.bytes / device.hbm_bytes_per_s >= MIN_STREAM_S


def profile_observations(profile: ProfileFile, source: str, device: GpuSpec | None = None) -> list[Observation]:
    """One observation per record used by a fit, on `device` (default: the profile's own)."""
    gpu = device or profile.device
    out = []
    for r in profile.records:
        if not is_fit_record(r, gpu):
            continue
        # Attention and streams run in the activations' dtype, which is also the KV cache's here.
        setup = Setup(profile.model, gpu, r.dtype, r.dtype, profile.tp)
        what = {KernelOp.gemm: f"M={r.tokens}", KernelOp.prefill_attention: f"prompt {r.tokens}",
                KernelOp.decode_attention: f"{r.tokens}×ctx {r.context}",
                KernelOp.stream: f"{r.name} {r.bytes / 1e6:.0f} MB"}[r.op]
        out.append(Observation(KernelTiming(setup, r.op, r.tokens, r.context, r.bytes), Metric.seconds, r.seconds,
                               f"{profile.model.name} TP{profile.tp} {r.op.value} {r.dtype.value} {what}", source))
    return out
