"""Numeric formats for weights, activations and the KV cache."""

from enum import StrEnum


class Dtype(StrEnum):
    """A storage / compute format, named as vLLM and the vendors' datasheets name it."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    fp8 = "fp8"
    fp4 = "fp4"

    @property
    def bytes(self) -> float:
        """Bytes per element."""
        return _BYTES[self]


_BYTES = {Dtype.fp32: 4.0, Dtype.bf16: 2.0, Dtype.fp16: 2.0, Dtype.fp8: 1.0, Dtype.fp4: 0.5}


def parse_dtype(value: str) -> Dtype:
    """Parse a dtype name, accepting common aliases (bfloat16, float8, e4m3, mxfp4 ...)."""
    key = value.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return Dtype(key)
    except ValueError:
        names = ", ".join(d.value for d in Dtype)
        raise ValueError(f"unknown dtype {value!r}; use one of {names}") from None


_ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float8": "fp8",
    "fp8_e4m3": "fp8",
    "e4m3": "fp8",
    "mxfp4": "fp4",
    "nvfp4": "fp4",
}
