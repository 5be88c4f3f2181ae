"""Dense decoder architectures: the built-in Llama-3.1 family and any Hugging Face config.json."""

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.catalog.files import read_json


class ModelSpec(BaseModel):
    """The architecture numbers the performance model and the memory arithmetic need."""

    model_config = ConfigDict(frozen=True)

    name: str
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_context: int = Field(gt=0)
    tie_word_embeddings: bool = False

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def params_per_layer(self) -> int:
        """Weights of one decoder layer: QKV, O, gate/up/down and the two RMSNorms."""
        attention = self.hidden_size * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size
        return attention + mlp + 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied), plus the final norm."""
        matrices = 1 if self.tie_word_embeddings else 2
        return matrices * self.vocab_size * self.hidden_size + self.hidden_size

    @property
    def num_params(self) -> int:
        return self.num_layers * self.params_per_layer + self.embedding_params


# Architecture numbers from the models' published config.json files (meta-llama/Llama-3.1-*, Llama-2-70b-hf).
LLAMA_3_1_8B = ModelSpec(
    name="llama-3.1-8b", num_layers=32, hidden_size=4096, intermediate_size=14336,
    num_attention_heads=32, num_kv_heads=8, head_dim=128, vocab_size=128256, max_context=131072,
)
LLAMA_3_1_70B = ModelSpec(
    name="llama-3.1-70b", num_layers=80, hidden_size=8192, intermediate_size=28672,
    num_attention_heads=64, num_kv_heads=8, head_dim=128, vocab_size=128256, max_context=131072,
)
LLAMA_3_1_405B = ModelSpec(
    name="llama-3.1-405b", num_layers=126, hidden_size=16384, intermediate_size=53248,
    num_attention_heads=128, num_kv_heads=8, head_dim=128, vocab_size=128256, max_context=131072,
)

# meta-llama/Llama-2-70b-hf config.json: Llama-3.1-70B's shape with a 32k vocabulary and a 4k context
# (MLPerf Inference's llama2-70b benchmark model).
LLAMA_2_70B = ModelSpec(
    name="llama-2-70b", num_layers=80, hidden_size=8192, intermediate_size=28672,
    num_attention_heads=64, num_kv_heads=8, head_dim=128, vocab_size=32000, max_context=4096,
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in (LLAMA_3_1_8B, LLAMA_3_1_70B, LLAMA_3_1_405B, LLAMA_2_70B)}


def model_from_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """Read a dense decoder from a Hugging Face `config.json` (or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    raw = read_json(p, "a Hugging Face config.json or its folder")
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: expected a JSON object with the model's architecture")
    missing = [k for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                           "num_attention_heads", "vocab_size") if k not in raw]
    if missing:
        raise ValueError(f"{p}: missing {', '.join(missing)}; is this a dense decoder's config.json?")
    heads = raw["num_attention_heads"]
    try:
        return ModelSpec(
            name=name or raw.get("_name_or_path") or p.parent.name,
            num_layers=raw["num_hidden_layers"],
            hidden_size=raw["hidden_size"],
            intermediate_size=raw["intermediate_size"],
            num_attention_heads=heads,
            num_kv_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
            vocab_size=raw["vocab_size"],
            max_context=raw.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        )
    except ValidationError as e:
        field = ".".join(str(x) for x in e.errors()[0]["loc"])
        raise ValueError(f"{p}: invalid {field}: {e.errors()[0]['msg']}") from None


def resolve_model(ref: str, base_dir: Path | None = None) -> ModelSpec:
    """A catalog name (`llama-3.1-70b`) or a path to a config.json / model folder."""
    key = ref.strip().lower()
    if key in MODELS:
        return MODELS[key]
    p = Path(ref)
    if not p.is_absolute() and base_dir is not None and not p.exists():
        p = base_dir / p
    if p.exists():
        return model_from_hf_config(p)
    raise ValueError(
        f"unknown model {ref!r}; use one of {', '.join(MODELS)} or a path to a Hugging Face config.json"
    )
