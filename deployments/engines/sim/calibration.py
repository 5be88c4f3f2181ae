"""Physical constants of the performance model, one small set per GPU family.

Each constant has a physical meaning. Hopper's, CDNA-3's and CDNA-4's were fitted by the library's
fitter (fit.py, run by `bench/fit_calibration.py`) on public measurements (`bench/data/calibration.yaml`,
`bench/data/calibration-amd.yaml`); `bench/calibration.py` prints every row's error. Ampere and
Blackwell have no measurements here: their constants are Hopper's, changed only where the architecture
gives a reason, said in the comment next to each. A user overrides any of them with a YAML file of the
same shape (`load_calibration`), e.g. the one `parallax calibrate` writes.
"""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.catalog.files import read_yaml
from deployments.catalog.gpus import GpuSpec


class FamilyConstants(BaseModel):
    """The constants of one GPU family (fractions are of the datasheet's peak)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gemm_flops_fraction: float = Field(gt=0, le=1, description="plateau of achieved/peak FLOP/s for large GEMMs")
    gemm_m_half: float = Field(gt=0, description="GEMM rows (tokens) at which half the plateau is reached")
    hbm_fraction: float = Field(gt=0, le=1, description="achieved/peak HBM bandwidth streaming weights")
    attn_flops_fraction: float = Field(gt=0, le=1, description="achieved/peak bf16 FLOP/s of prefill attention")
    attn_hbm_fraction: float = Field(gt=0, le=1, description="achieved/peak HBM bandwidth reading the KV cache")
    layer_overhead_us: float = Field(ge=0, description="fixed time per decoder layer per pass (kernel gaps)")
    link_fraction: float = Field(gt=0, le=1, description="achieved/peak link bandwidth of collectives and p2p")
    ring_step_us: float = Field(ge=0, description="latency of one ring all-reduce step")
    oneshot_us: float = Field(ge=0, description="latency of a one-shot (custom) all-reduce for small messages")
    p2p_us: float = Field(ge=0, description="latency of one pipeline-stage activation transfer")
    host_prefill_ms: float = Field(ge=0, description="host time of an iteration holding a prefill chunk")
    host_decode_ms: float = Field(ge=0, description="host time of a decode-only iteration (graphs replayed)")
    host_per_seq_us: float = Field(ge=0, description="host time per sequence per iteration (sampling, output)")

    def gemm_efficiency(self, m: float) -> float:
        """Achieved fraction of peak FLOP/s of a GEMM with `m` rows: a smooth rise to a plateau."""
        return self.gemm_flops_fraction * m / (m + self.gemm_m_half)


# What each constant can physically be (a fit stays inside): fractions of a peak are at most 1, times
# are positive and below what any engine would tolerate. Tighter, per-family bounds (what a vendor's
# microbenchmarks reach) are the fit's caller's to give.
PHYSICAL_BOUNDS: dict[str, tuple[float, float]] = {
    "gemm_flops_fraction": (0.02, 1.0),
    "gemm_m_half": (1.0, 4096.0),
    "hbm_fraction": (0.02, 1.0),
    "attn_flops_fraction": (0.01, 1.0),
    "attn_hbm_fraction": (0.02, 1.0),
    "layer_overhead_us": (0.1, 10_000.0),
    "link_fraction": (0.02, 1.0),
    "ring_step_us": (0.1, 1_000.0),
    "oneshot_us": (0.1, 1_000.0),
    "p2p_us": (0.1, 1_000.0),
    "host_prefill_ms": (0.01, 1_000.0),
    "host_decode_ms": (0.01, 1_000.0),
    "host_per_seq_us": (0.01, 100_000.0),
}


# Hopper (H100 / H200). "fitted": by bench/fit_calibration.py on the `fit: true` rows of
# bench/data/calibration.yaml (see MODEL.md for the fit and the held-out error); "fixed": set from public
# microbenchmarks / first principles, because the data cannot tell them apart from the fitted ones.
HOPPER = FamilyConstants(
    gemm_flops_fraction=0.665,  # fitted; cuBLAS/TRT-LLM FP8 GEMMs on H100 reach ~0.6-0.8 of dense peak
    gemm_m_half=32.0,           # fitted, at its lower bound (half a 64-row wgmma tile); no mid-M data
    hbm_fraction=0.69,          # fitted; weight streaming incl. launch tails (STREAM-like copies ~0.9)
    attn_flops_fraction=0.75,   # fitted, at its upper bound: FlashAttention-3 reaches ~0.75 of bf16 peak
    attn_hbm_fraction=0.9,      # fitted, at its upper bound: TRT-LLM's XQA decode kernels stream KV near peak
    layer_overhead_us=20.0,     # fixed: ~10 kernels per layer × ~2 µs launch gap / ramp / tail
    link_fraction=0.75,         # fixed: nccl-tests all-reduce bus bandwidth ≈ 0.75-0.8 of NVLink 4
    ring_step_us=2.0,           # fixed: NCCL small-message all-reduce ~25-30 µs at 8 GPUs = 14 ring steps
    oneshot_us=6.0,             # fixed: vLLM / TRT-LLM custom one-shot all-reduce, ~5-8 µs on NVSwitch
    p2p_us=8.0,                 # fixed: one NCCL send/recv of a small message over NVLink
    host_prefill_ms=4.0,        # fixed: scheduling + sampling + output of a step run without CUDA graphs
    host_decode_ms=2.0,         # fixed: the same with CUDA graphs replayed (vLLM/TRT-LLM: ~1-3 ms)
    host_per_seq_us=0.1,        # fitted, at its lower bound: per-sequence bookkeeping is negligible in TRT-LLM
)

# MI300X / MI325X (CDNA-3): fitted by bench/fit_calibration.py on AMD's vLLM max-throughput rows of
# bench/data/calibration-amd.yaml (MI300X, 70B and 405B FP8 at TP8, 128/2048 and 2048/2048; leave-one-out
# median 6.6 %); MLPerf rows held out. Those rows pin two constants: the GEMM plateau and the all-reduce
# bandwidth. The rest is derived from Hopper's: attention plateau ×0.75 (public hipBLASLt / CK analyses put
# MI300X's achieved matrix throughput clearly below H100's share of peak), collective and p2p latencies ×2
# (RCCL over a mesh without a switch; an assumption), the same HBM share and host path (same engine).
CDNA3 = HOPPER.model_copy(update={
    "gemm_flops_fraction": 0.358,   # fitted: vLLM's FP8 GEMMs on MI300X, ~940 TFLOP/s of 2,615 at large M
    "attn_flops_fraction": 0.75 * HOPPER.attn_flops_fraction,
    "link_fraction": 0.346,         # fitted: RCCL all-reduce at TP8 drives ~0.35 of the 7 Infinity Fabric links
    "ring_step_us": 2 * HOPPER.ring_step_us,
    "oneshot_us": 2 * HOPPER.oneshot_us,
    "p2p_us": 2 * HOPPER.p2p_us,
})

# MI355X (CDNA-4): fitted on the `vllm bench serve` rows (70B FP8 and MXFP4, 405B MXFP4, TP1, 64 users;
# leave-one-out median 8.5 %), which pin the GEMM plateau, the HBM share and the prefill-attention plateau;
# links and latencies as CDNA-3 (TP1 rows cannot see them). The attention plateau comes out low (0.135 of
# bf16 peak, where FlashAttention-class kernels reach far more): the rows' TTFT of 8k-token prompts at 64
# users carries all of prefill's cost beyond the GEMMs (chunked prefill over the paged KV cache, FP4
# dequantisation), and this is the constant that absorbs it. See MODEL.md.
CDNA4 = CDNA3.model_copy(update={
    "gemm_flops_fraction": 0.647,   # fitted
    "hbm_fraction": 0.429,          # fitted: weight streaming of FP8/FP4 checkpoints incl. dequantisation
    "attn_flops_fraction": 0.135,   # fitted (see above)
})

FAMILIES: dict[str, FamilyConstants] = {
    "hopper": HOPPER,
    # A100: same software stack and kernels one generation older. cuBLAS bf16 GEMMs reach a similar share
    # of the (lower) peak, HBM2e streams at a similar share; NVLink 3 latencies as Hopper. Not measured.
    "ampere": HOPPER,
    # B200: no measurements here. Same engines and host path; larger GEMM tiles need more rows to fill
    # 148 SMs at twice Hopper's per-SM rate, so the half-plateau M doubles. NVLink 5 latencies as Hopper.
    "blackwell": HOPPER.model_copy(update={"gemm_m_half": 2 * HOPPER.gemm_m_half}),
    "cdna3": CDNA3,
    "cdna4": CDNA4,
}


class Calibration(BaseModel):
    """Constants per GPU family; a YAML override names only the families and fields it changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    families: dict[str, FamilyConstants] = Field(default_factory=lambda: dict(FAMILIES))

    def for_gpu(self, gpu: GpuSpec) -> FamilyConstants:
        """The constants of `gpu`'s family."""
        try:
            return self.families[gpu.family]
        except KeyError:
            known = ", ".join(sorted(self.families))
            raise ValueError(
                f"no calibration for GPU family {gpu.family!r} ({gpu.name}); use one of {known} as the GPU "
                f"spec's family, or add the family to a calibration YAML"
            ) from None


DEFAULT_CALIBRATION = Calibration()


def load_calibration(path: str | Path) -> Calibration:
    """Default constants, with the families / fields given in a YAML file replaced.

    The file looks like `families: {hopper: {host_decode_ms: 2.0}}`; a family not in the defaults must
    give every field.
    """
    p = Path(path)
    raw = read_yaml(p, "a calibration YAML file")
    if not isinstance(raw, dict) or not isinstance(raw.get("families"), dict):
        raise ValueError(f"{p}: expected a mapping `families: {{FAMILY: {{FIELD: value, ...}}}}`")
    merged: dict[str, object] = {name: c.model_dump() for name, c in FAMILIES.items()}
    for name, fields in raw["families"].items():
        if not isinstance(fields, dict):
            raise ValueError(f"{p}: families.{name}: expected a mapping of constants")
        base = merged.get(name, {})
        merged[name] = {**base, **fields} if isinstance(base, dict) else fields
    try:
        return Calibration.model_validate({"families": merged})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise ValueError(f"{p}: {field}: {err['msg']}") from None
