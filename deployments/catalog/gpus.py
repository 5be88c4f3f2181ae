"""Accelerators: memory, HBM bandwidth, dense peak FLOP/s per dtype, the intra-node fabric and the network.

Figures are the vendors' public datasheet numbers (dense, i.e. without structured sparsity);
each entry names its source. A user GPU is read from a YAML file with the same fields.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.catalog.files import read_yaml
from schema.dtypes import Dtype

GB = 1e9
TERA = 1e12


class LinkSpec(BaseModel):
    """The GPU-to-GPU fabric inside one node.

    `switch`: every GPU reaches a switch (NVSwitch) with `bandwidth_gbps` in total, whatever the
    TP group size. `mesh`: point-to-point links of `bandwidth_gbps` each to every other GPU of the
    node (AMD Infinity Fabric); a TP group of t GPUs drives t-1 of them per GPU.
    Bandwidths are bidirectional GB/s, as datasheets quote them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    topology: Literal["switch", "mesh"]
    bandwidth_gbps: float = Field(gt=0)

    def group_bandwidth(self, group_size: int) -> float:
        """Bytes/s one GPU can send (one direction) to the rest of a group of `group_size` GPUs."""
        one_way = self.bandwidth_gbps * GB / 2
        if group_size <= 1:
            return float("inf")
        return one_way if self.topology == "switch" else one_way * (group_size - 1)


class GpuSpec(BaseModel):
    """One accelerator kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: str = Field(description="architecture family; the simulator's calibration is per family")
    memory_gb: float = Field(gt=0)
    hbm_tbps: float = Field(gt=0, description="HBM bandwidth, TB/s")
    peak_tflops: dict[Dtype, float] = Field(description="dense peak TFLOP/s per natively supported dtype")
    link: LinkSpec
    # One 400 Gb/s NIC per GPU (50 GB/s each way): the DGX H100 / H200 compute fabric (eight single-port
    # ConnectX-7 400 Gb/s adapters, NVIDIA DGX H100/H200 user guide) and the 8×400G of MI300X-class platforms.
    inter_node_gbps: float = Field(default=50.0, gt=0, description="per-GPU network GB/s, one direction")
    # A KV-cache handoff's fixed cost besides its bytes: the decode side posting the read of the prompt's blocks
    # and the completion notice reaching both engines (transfer descriptors, a control message). Not measured
    # here: the middle of the tens to hundreds of µs that NIXL/UCX-class transfers take (shared/LIVE-CONTROL.md);
    # the wait for the decode replica's next step is the simulator's own (its event core), not in this figure.
    kv_transfer_us: float = Field(default=100.0, ge=0, description="fixed time of one KV-cache handoff, µs")
    # Host-to-device bandwidth, one direction, what a replica's weight loading is bounded by: PCIe Gen5 x16 is
    # 128 GB/s bidirectional (64 each way) on H100/H200/B200 SXM and the MI300-class OAMs (their datasheets);
    # the A100 has PCIe Gen4 (32 GB/s each way).
    host_to_device_gbps: float = Field(default=64.0, gt=0, description="host→GPU GB/s, one direction")
    source: str = ""

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * GB

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_tbps * TERA

    def supports(self, dtype: Dtype) -> bool:
        return dtype in self.peak_tflops

    def compute_dtype(self, dtype: Dtype) -> Dtype:
        """The dtype the tensor cores run for weights stored as `dtype`.

        A format the GPU lacks natively (fp8 on A100, fp4 on Hopper) runs weight-only: the weights
        are read at their own width and upcast to the narrowest wider format the GPU has (as vLLM's
        Marlin kernels do).
        """
        if self.supports(dtype):
            return dtype
        for wider in (Dtype.fp8, Dtype.bf16, Dtype.fp16, Dtype.fp32):
            if wider.bytes > dtype.bytes and self.supports(wider):
                return wider
        raise ValueError(f"{self.name} has no compute format for {dtype.value}")

    def peak_flops(self, dtype: Dtype) -> float:
        """Dense peak FLOP/s for GEMMs on weights stored as `dtype`."""
        return self.peak_tflops[self.compute_dtype(dtype)] * TERA


def _nvidia(name: str, family: str, memory_gb: float, hbm_tbps: float, tflops: dict[Dtype, float],
            nvlink_gbps: float, source: str) -> GpuSpec:
    return GpuSpec(name=name, family=family, memory_gb=memory_gb, hbm_tbps=hbm_tbps, peak_tflops=tflops,
                   link=LinkSpec(topology="switch", bandwidth_gbps=nvlink_gbps), source=source)


def _amd(name: str, family: str, memory_gb: float, hbm_tbps: float, tflops: dict[Dtype, float],
         link_gbps: float, source: str) -> GpuSpec:
    return GpuSpec(name=name, family=family, memory_gb=memory_gb, hbm_tbps=hbm_tbps, peak_tflops=tflops,
                   link=LinkSpec(topology="mesh", bandwidth_gbps=link_gbps), source=source)


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        # NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): 2,039 GB/s, BF16 312 TF dense,
        # NVLink 600 GB/s; no FP8 tensor cores.
        _nvidia("a100-80g", "ampere", 80, 2.039, {Dtype.bf16: 312, Dtype.fp16: 312, Dtype.fp32: 19.5},
                600, "NVIDIA A100 datasheet").model_copy(update={"host_to_device_gbps": 32.0}),
        # NVIDIA H100 Tensor Core GPU datasheet (SXM): 80 GB HBM3, 3.35 TB/s, BF16 989 TF / FP8 1,979 TF
        # dense (the datasheet's 1,979 / 3,958 are with sparsity), NVLink 900 GB/s.
        _nvidia("h100-sxm", "hopper", 80, 3.35,
                {Dtype.bf16: 989.4, Dtype.fp16: 989.4, Dtype.fp8: 1978.9, Dtype.fp32: 66.9},
                900, "NVIDIA H100 datasheet"),
        # NVIDIA H200 Tensor Core GPU datasheet (SXM): 141 GB HBM3e, 4.8 TB/s, H100's compute, NVLink 900.
        _nvidia("h200", "hopper", 141, 4.8,
                {Dtype.bf16: 989.4, Dtype.fp16: 989.4, Dtype.fp8: 1978.9, Dtype.fp32: 66.9},
                900, "NVIDIA H200 datasheet"),
        # NVIDIA HGX/DGX B200 datasheet, per GPU: 180 GB HBM3e, 8 TB/s, BF16 2.25 PF / FP8 4.5 PF /
        # FP4 9 PF dense (half the sparse figures), NVLink 5 at 1.8 TB/s.
        _nvidia("b200", "blackwell", 180, 8.0,
                {Dtype.bf16: 2250, Dtype.fp16: 2250, Dtype.fp8: 4500, Dtype.fp4: 9000, Dtype.fp32: 75},
                1800, "NVIDIA DGX B200 datasheet"),
        # AMD Instinct MI300X datasheet: 192 GB HBM3, 5.3 TB/s, BF16 1,307.4 TF / FP8 2,614.9 TF dense,
        # Infinity Fabric 128 GB/s bidirectional per link, all-to-all within an 8-GPU node.
        _amd("mi300x", "cdna3", 192, 5.3,
             {Dtype.bf16: 1307.4, Dtype.fp16: 1307.4, Dtype.fp8: 2614.9, Dtype.fp32: 163.4},
             128, "AMD Instinct MI300X datasheet"),
        # AMD Instinct MI325X datasheet: 256 GB HBM3E, 6 TB/s, MI300X's compute; 128 GB/s per link
        # (the study's Table 3).
        _amd("mi325x", "cdna3", 256, 6.0,
             {Dtype.bf16: 1307.4, Dtype.fp16: 1307.4, Dtype.fp8: 2614.9, Dtype.fp32: 163.4},
             128, "AMD Instinct MI325X datasheet; arXiv 2603.05692 Table 3"),
        # AMD Instinct MI355X datasheet: 288 GB HBM3E, 8 TB/s, FP16/BF16 2.5 PF, FP8 5 PF,
        # MXFP4 10 PF dense; 153.6 GB/s per link (the study's Table 3).
        _amd("mi355x", "cdna4", 288, 8.0,
             {Dtype.bf16: 2516.6, Dtype.fp16: 2516.6, Dtype.fp8: 5033.2, Dtype.fp4: 10066.3,
              Dtype.fp32: 157.3},
             153.6, "AMD Instinct MI355X datasheet; arXiv 2603.05692 Table 3"),
    )
}


def gpu_from_yaml(path: str | Path) -> GpuSpec:
    """A user-described GPU: a YAML file with GpuSpec's fields."""
    p = Path(path)
    raw = read_yaml(p, "a GPU name or a YAML GPU spec file")
    try:
        return GpuSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ValueError(f"{p}: field {field}: {err['msg']}") from None


def resolve_gpu(ref: str, base_dir: Path | None = None) -> GpuSpec:
    """A catalog name (`h100-sxm`) or a path to a YAML GPU spec."""
    key = ref.strip().lower()
    if key in GPUS:
        return GPUS[key]
    p = Path(ref)
    if not p.is_absolute() and base_dir is not None and not p.exists():
        p = base_dir / p
    if p.suffix in (".yaml", ".yml") or p.exists():
        return gpu_from_yaml(p)
    raise ValueError(f"unknown GPU {ref!r}; use one of {', '.join(GPUS)} or a path to a YAML GPU spec")
