"""`parallax profile`: time, with torch on the local accelerator, the operations the performance model
prices, at one model's TP-sharded shapes, and fit the constants they pin.

Per weight dtype, the four GEMMs of a layer (QKV, O, gate/up, down) over an M sweep (fp8 through
torch's scaled matmul where the device has it); prefill attention (SDPA, causal) of one prompt and
decode attention (one query per sequence over its KV) at several context lengths; the element-wise
kernels of a layer (two add + RMSNorm, SiLU·mul, the KV write) and a device-to-device copy. Each
operation: warm-up runs, then `repeats` timings of a batch of back-to-back launches (replayed from a
CUDA/HIP graph on a GPU, as engines replay decode steps), the median kept. CUDA covers ROCm (HIP
builds of torch expose it as `cuda`); a CPU runs the same code (tiny shapes for tests).

torch is an optional dependency (the [cpu] and [vllm] extras bring it): this module imports it.
"""

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F

from deployments.catalog.gpus import GPUS, GpuSpec, LinkSpec
from deployments.catalog.memory import kv_heads_per_gpu
from deployments.catalog.models import ModelSpec
from deployments.engines.sim.calibration import DEFAULT_CALIBRATION, FamilyConstants
from deployments.engines.sim.fit import KERNEL_CONSTANTS, fit_family
from deployments.engines.sim.measurements import KernelOp
from deployments.engines.sim.profile_data import ProfileFile, ProfileRecord, profile_observations
from schema.dtypes import Dtype

DEFAULT_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DEFAULT_CONTEXTS = (512, 2048, 8192)
DEFAULT_DECODE_BATCHES = (1, 16, 64)
COPY_BYTES = 1 << 28        # 256 MiB copied per timing (moves 512 MiB)

# Device names (torch.cuda.get_device_name) → catalog entries whose datasheet numbers apply.
_CATALOG_NAMES = (("H200", "h200"), ("H100", "h100-sxm"), ("A100", "a100-80g"), ("B200", "b200"),
                  ("MI355X", "mi355x"), ("MI325X", "mi325x"), ("MI300X", "mi300x"))
_TORCH_DTYPES = {Dtype.fp32: torch.float32, Dtype.bf16: torch.bfloat16, Dtype.fp16: torch.float16}


@dataclass(frozen=True)
class ProfileSettings:
    """What to time: the sweeps and how many timings to take the median of."""

    tokens: tuple[int, ...] = DEFAULT_TOKENS
    contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    decode_batches: tuple[int, ...] = DEFAULT_DECODE_BATCHES
    repeats: int = 10
    copy_bytes: int = COPY_BYTES


def pick_device(kind: str) -> torch.device:
    """`auto`: the first GPU (CUDA or ROCm) when torch sees one, else the CPU."""
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA/ROCm GPU here; use --device cpu")
    if kind not in ("cuda", "cpu"):
        raise ValueError(f"--device {kind}: use auto, cuda or cpu")
    return torch.device(kind)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cpu"
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    return names[0] if names else "cpu"


def catalog_gpu(name: str) -> GpuSpec | None:
    """The catalog entry for a torch device name, when there is one."""
    upper = name.upper()
    if "PCIE" in upper or "NVL" in upper:   # other memory and power than the catalog's SXM parts
        return None
    for key, entry in _CATALOG_NAMES:
        if key in upper:
            return GPUS[entry]
    return None


class Timer:
    """Median seconds of `fn` on `device`: warm-up, then `repeats` timings of `inner` back-to-back calls
    (captured in a CUDA/HIP graph and replayed on a GPU where capture works). Short operations get more
    calls per timing, so that one timing lasts about MIN_TIMING_S and the timer's own cost vanishes."""

    MIN_TIMING_S = 1e-3
    MAX_INNER = 256

    def __init__(self, device: torch.device, repeats: int):
        self.device, self.repeats = device, repeats

    def __call__(self, fn: Callable[[], object], inner: int = 8) -> float:
        fn()
        self._sync()
        t0 = time.perf_counter()
        fn()
        self._sync()
        once = time.perf_counter() - t0
        inner = max(inner, min(self.MAX_INNER, int(self.MIN_TIMING_S / max(once, 1e-9))))
        run = self._graph(fn, inner) if self.device.type == "cuda" else None
        if run is None:
            def run() -> None:
                for _ in range(inner):
                    fn()
        times = []
        for _ in range(self.repeats):
            self._sync()
            t0 = time.perf_counter()
            run()
            self._sync()
            times.append((time.perf_counter() - t0) / inner)
        return statistics.median(times)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _graph(self, fn: Callable[[], object], inner: int) -> Callable[[], None] | None:
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                fn()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(inner):
                    fn()
            return graph.replay
        except RuntimeError:   # an op that cannot be captured: time eager launches instead
            return None


def _gemm_shapes(model: ModelSpec, tp: int) -> dict[str, tuple[int, int]]:
    """(K, N) of each GEMM of one layer on one TP rank, as the performance model shards them."""
    h, hd = model.hidden_size, model.head_dim
    q, kv = model.num_attention_heads // tp, kv_heads_per_gpu(model, tp)
    ffn = model.intermediate_size // tp
    return {"qkv": (h, (q + 2 * kv) * hd), "o": (q * hd, h), "gate_up": (h, 2 * ffn), "down": (ffn, h)}


def _fp8_dtype(device: torch.device) -> torch.dtype | None:
    """The device's fp8 format for scaled matmuls: e4m3fnuz on MI300-class (gfx942), e4m3fn elsewhere;
    None where torch._scaled_mm does not run."""
    if device.type != "cuda":
        return None
    fnuz = torch.version.hip is not None and "gfx942" in torch.cuda.get_device_properties(device).gcnArchName
    dt = torch.float8_e4m3fnuz if fnuz else torch.float8_e4m3fn
    try:
        a = torch.zeros(16, 32, device=device).to(dt)
        b = torch.zeros(16, 32, device=device).to(dt).t()
        one = torch.ones((), device=device)
        torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    except (RuntimeError, AttributeError):
        return None
    return dt


def _gemm_fn(m: int, k: int, n: int, dtype: Dtype, device: torch.device, fp8: torch.dtype | None,
             act: torch.dtype) -> Callable[[], object]:
    if dtype == Dtype.fp8:
        assert fp8 is not None
        rows = max(16, -(-m // 16) * 16)   # scaled matmuls want multiples of 16 rows (engines pad too)
        a = torch.randn(rows, k, device=device).to(fp8)
        b = torch.randn(n, k, device=device).to(fp8).t()
        one = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    x = torch.randn(m, k, device=device, dtype=act)
    w = torch.randn(n, k, device=device, dtype=act)
    return lambda: F.linear(x, w)


def time_gemms(model: ModelSpec, tp: int, dtype: Dtype, device: torch.device, timer: Timer,
               tokens: Sequence[int], fp8: torch.dtype | None) -> list[ProfileRecord]:
    act = _TORCH_DTYPES.get(dtype, torch.bfloat16)
    out = []
    for m in tokens:
        parts = {name: timer(_gemm_fn(m, k, n, dtype, device, fp8, act))
                 for name, (k, n) in _gemm_shapes(model, tp).items()}
        out.append(ProfileRecord(op=KernelOp.gemm, dtype=dtype, tokens=m, seconds=sum(parts.values()),
                                 name="qkv+o+gate_up+down", parts=parts))
    return out


def time_attention(model: ModelSpec, tp: int, dtype: Dtype, device: torch.device, timer: Timer,
                   contexts: Sequence[int], batches: Sequence[int]) -> list[ProfileRecord]:
    act = _TORCH_DTYPES[dtype]
    qh, kvh, hd = model.num_attention_heads // tp, kv_heads_per_gpu(model, tp), model.head_dim
    gqa = qh != kvh
    out = []
    for n in contexts:
        q = torch.randn(1, qh, n, hd, device=device, dtype=act)
        k = torch.randn(1, kvh, n, hd, device=device, dtype=act)
        v = torch.randn(1, kvh, n, hd, device=device, dtype=act)
        s = timer(partial(F.scaled_dot_product_attention, q, k, v, is_causal=True, enable_gqa=gqa), inner=2)
        out.append(ProfileRecord(op=KernelOp.prefill_attention, dtype=dtype, tokens=n, seconds=s, name="sdpa causal"))
    for b in batches:
        for ctx in contexts:
            q = torch.randn(b, qh, 1, hd, device=device, dtype=act)
            k = torch.randn(b, kvh, ctx, hd, device=device, dtype=act)
            v = torch.randn(b, kvh, ctx, hd, device=device, dtype=act)
            s = timer(partial(F.scaled_dot_product_attention, q, k, v, enable_gqa=gqa))
            out.append(ProfileRecord(op=KernelOp.decode_attention, dtype=dtype, tokens=b, context=ctx, seconds=s,
                                     name="sdpa over the KV cache"))
    return out


def time_streams(model: ModelSpec, tp: int, dtype: Dtype, device: torch.device, timer: Timer,
                 tokens: Sequence[int], copy_bytes: int) -> list[ProfileRecord]:
    """The element-wise kernels of one layer at M tokens (bytes counted op by op), and a copy."""
    act = _TORCH_DTYPES[dtype]
    a = torch.finfo(act).bits / 8
    h, hd = model.hidden_size, model.head_dim
    kvh = kv_heads_per_gpu(model, tp)
    ffn = model.intermediate_size // tp
    out = []
    for m in tokens:
        x = torch.randn(m, h, device=device, dtype=act)
        res = torch.randn(m, h, device=device, dtype=act)
        w = torch.ones(h, device=device, dtype=act)
        gate_up = torch.randn(m, 2 * ffn, device=device, dtype=act)
        kv = torch.randn(m, 2 * kvh * hd, device=device, dtype=act)
        cache = torch.empty(2 * m, 2 * kvh * hd, device=device, dtype=act)
        slots = torch.arange(m, device=device) * 2

        def layer(x: torch.Tensor = x, res: torch.Tensor = res, w: torch.Tensor = w, gate_up: torch.Tensor = gate_up,
                  kv: torch.Tensor = kv, cache: torch.Tensor = cache, slots: torch.Tensor = slots) -> None:
            for _ in range(2):
                r = x + res
                F.rms_norm(r, (h,), w)
            g, u = gate_up.chunk(2, dim=-1)
            F.silu(g) * u
            cache.index_copy_(0, slots, kv)

        # add: 2h read + h written; rms_norm: h + h; silu: F + F; mul: 2F + F; KV write: 2·(2·kv·hd).
        moved = m * a * (2 * (3 * h + 2 * h) + 5 * ffn + 2 * (2 * kvh * hd))
        out.append(ProfileRecord(op=KernelOp.stream, dtype=dtype, tokens=m, bytes=moved, seconds=timer(layer),
                                 name="elementwise"))
    src = torch.empty(copy_bytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    out.append(ProfileRecord(op=KernelOp.stream, dtype=dtype, bytes=2.0 * copy_bytes, name="copy",
                             seconds=timer(lambda: dst.copy_(src), inner=4)))
    return out


def measured_device(name: str, device: torch.device, records: Sequence[ProfileRecord], flops_per_row: float,
                    family: str) -> GpuSpec:
    """A GPU spec from the measurements, for a device the catalog does not know: its peaks are the best
    rates measured (GEMM FLOP/s per dtype, copy bandwidth), so fitted fractions are of those.
    `flops_per_row`: a layer's GEMM FLOPs per token (2·Σ K·N)."""
    peaks: dict[Dtype, float] = {}
    for r in records:
        if r.op == KernelOp.gemm:
            peaks[r.dtype] = max(peaks.get(r.dtype, 0.0), r.tokens * flops_per_row / r.seconds / 1e12)
    copy = max((r.bytes / r.seconds for r in records if r.name == "copy"), default=1e9)
    memory = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
              else psutil.virtual_memory().total)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return GpuSpec(name=slug[:48] or "device", family=family, memory_gb=memory / 1e9, hbm_tbps=copy / 1e12,
                   peak_tflops=peaks, link=LinkSpec(topology="switch", bandwidth_gbps=2 * copy / 1e9),
                   source=f"measured by parallax profile on {name}: peaks are the best measured GEMM rates and "
                          "copy bandwidth; the link is not measured (a single device cannot see its fabric)")


def profile_model(model: ModelSpec, tp: int, dtypes: Sequence[Dtype], device_kind: str = "auto",
                  gpu: GpuSpec | None = None, family: str | None = None,
                  settings: ProfileSettings | None = None, log: Callable[[str], None] = print) -> ProfileFile:
    """Time everything, describe the device, fit the kernel constants; the profile file's content."""
    settings = settings or ProfileSettings()
    device = pick_device(device_kind)
    name = device_name(device)
    timer = Timer(device, settings.repeats)
    fp8 = _fp8_dtype(device)
    notes = []
    records: list[ProfileRecord] = []
    act = Dtype.fp32 if device.type == "cpu" and Dtype.fp32 in dtypes else Dtype.bf16
    for d in dtypes:
        if d == Dtype.fp8 and fp8 is None:
            notes.append("fp8 skipped: torch._scaled_mm does not run on this device")
            continue
        if d not in (Dtype.fp8, *_TORCH_DTYPES):
            notes.append(f"{d.value} skipped: no torch GEMM for it here")
            continue
        log(f"GEMMs {d.value}: M = {', '.join(map(str, settings.tokens))}")
        records += time_gemms(model, tp, d, device, timer, settings.tokens, fp8)
    log(f"attention {act.value}: contexts {', '.join(map(str, settings.contexts))}")
    records += time_attention(model, tp, act, device, timer, settings.contexts, settings.decode_batches)
    log("element-wise kernels and a copy")
    records += time_streams(model, tp, act, device, timer, settings.tokens, settings.copy_bytes)
    known = gpu or catalog_gpu(name)
    if known is None:
        flops_per_row = 2.0 * sum(k * n for k, n in _gemm_shapes(model, tp).values())
        spec = measured_device(name, device, records, flops_per_row,
                               family or ("cpu" if device.type == "cpu" else "custom"))
    else:
        spec = known if family is None else known.model_copy(update={"family": family})
    profile = ProfileFile(device=spec, device_from="catalog" if known else "measured", torch=torch.__version__,
                          date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), model=model, tp=tp,
                          repeats=settings.repeats, records=records, notes=notes)
    return fit_profile(profile)


def fit_profile(profile: ProfileFile) -> ProfileFile:
    """The profile with the kernel constants fitted from its own records (the family's others as they are)."""
    spec = profile.device
    base = DEFAULT_CALIBRATION.families.get(spec.family) or _new_family_base()
    result = fit_family(profile_observations(profile, "profile"), spec.family, base, KERNEL_CONSTANTS)
    errors = {k: v for k in ("fit", "loo") if (v := result.median_error(k)) is not None}
    return profile.model_copy(update={
        "fitted": {n: getattr(result.constants, n) for n in KERNEL_CONSTANTS},
        "fit_errors": errors, "notes": [*profile.notes, *result.notes]})


def _new_family_base() -> FamilyConstants:
    """A family the defaults do not know starts from Hopper's constants (overheads, links)."""
    return DEFAULT_CALIBRATION.families["hopper"]

