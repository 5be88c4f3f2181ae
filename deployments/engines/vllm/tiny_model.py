"""A tiny random-weight Llama with a locally trained byte-level BPE tokenizer (no downloads).

It exists so that real vLLM can be exercised on a CPU: tests and the CPU demo serve it at tp1, tp2
and pp2. The weights are random, so its text is gibberish; its shapes are a real Llama's.
"""

import json
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path

# A Llama-3-style chat template over the tokenizer's own special tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>", "<|start|>", "<|end|>")
_MARKER = "parallax-tiny-model.json"

# Words for the tokenizer's training text: enough variety for ~770 merges.
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we their been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many before must through back years where much your "
    "way well down should because each just those people how too little state good very make world still "
    "own see men work long get here between both life being under never day same another know while last "
    "might us great old year off come since against go came right used take three parallel tensor pipeline "
    "model token latency throughput request server engine batch cache memory prefill decode stage replica "
    "gpu node cluster shard layer head attention matrix vector compute bandwidth queue schedule deadline"
)


@dataclass(frozen=True)
class TinyLlamaSpec:
    """The tiny model's architecture (a real Llama's shape, scaled down)."""

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 512
    vocab_size: int = 1024
    max_position_embeddings: int = 4096
    seed: int = 0
    # Only printable ASCII in the vocabulary: random weights pick any token, and a lone byte of a
    # multi-byte UTF-8 character would stream as an empty text delta (no visible token for the client).
    alphabet: str = "ascii"


def training_text(seed: int, sentences: int = 4000) -> list[str]:
    """Deterministic pseudo-English with numbers and punctuation, to train the BPE merges on."""
    rng = random.Random(seed)
    words_list = _WORDS.split()
    out = []
    for _ in range(sentences):
        words = [rng.choice(words_list) for _ in range(rng.randint(4, 16))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 9999)))
        out.append(" ".join(words).capitalize() + rng.choice((".", ".", "?", "!", ",")))
    return out


def build_tokenizer(spec: TinyLlamaSpec):  # -> transformers.PreTrainedTokenizerFast
    """Train a byte-level BPE tokenizer of `spec.vocab_size` tokens, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    ascii_chars = sorted({c for piece, _ in byte_level.pre_tokenize_str(string.printable) for c in piece})
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=ascii_chars,
        limit_alphabet=len(ascii_chars),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(spec.seed), trainer=trainer)
    if tok.get_vocab_size() != spec.vocab_size:
        raise ValueError(f"the training text gave {tok.get_vocab_size()} tokens, not {spec.vocab_size}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=spec.max_position_embeddings,
    )


def is_tiny_model(path: Path, spec: TinyLlamaSpec) -> bool:
    """True when `path` already holds the model that `spec` describes."""
    marker = path / _MARKER
    if not marker.is_file() or not (path / "model.safetensors").is_file():
        return False
    try:
        return bool(json.loads(marker.read_text()) == asdict(spec))
    except json.JSONDecodeError:
        return False


def write_tiny_model(path: str | Path, spec: TinyLlamaSpec | None = None, force: bool = False) -> Path:
    """Write config, random fp32 weights and tokenizer into `path` (kept when already there)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = spec or TinyLlamaSpec()
    out = Path(path)
    if not force and is_tiny_model(out, spec):
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec)
    config = LlamaConfig(
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        intermediate_size=spec.intermediate_size,
        vocab_size=len(tokenizer),
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config).float()
    # Zero output rows for the special tokens: their logit is 0 while the best of ~1000 random logits is
    # positive, so greedy decoding never emits one (they would stream as empty text, like EOS).
    with torch.no_grad():
        model.lm_head.weight[tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))] = 0.0
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / _MARKER).write_text(json.dumps(asdict(spec)))
    return out
