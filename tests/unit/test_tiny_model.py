"""The tiny Llama generator: shapes, tokenizer, chat template, and that it is written only once."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

from deployments.engines.vllm.tiny_model import (  # noqa: E402
    SPECIAL_TOKENS,
    TinyLlamaSpec,
    is_tiny_model,
    write_tiny_model,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "m")


def test_config_has_the_tiny_llama_shape(tiny: Path) -> None:
    cfg = json.loads((tiny / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["vocab_size"]) == (256, 4, 4, 2, 1024)


def test_tokenizer_round_trips_text_and_has_a_chat_template(tiny: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    assert len(tok) == 1024
    text = "The pipeline stage 42 sends a token!"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert len(ids) < len(text)  # trained merges, not bytes
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.startswith(tok.bos_token) and chat.endswith("<|start|>assistant\n")


def test_weights_load_and_are_deterministic(tiny: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    again = write_tiny_model(tmp_path / "again")
    a, b = load_file(tiny / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert a["model.embed_tokens.weight"].shape == (1024, 256)


def test_every_token_decodes_to_visible_text_except_specials(tiny: Path) -> None:
    """Random weights may pick any token: each must stream as non-empty, valid text."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    specials = set(tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)))
    for i in range(len(tok)):
        if i not in specials:
            text = tok.decode([i])
            assert text and "\ufffd" not in text, i
    head = load_file(tiny / "model.safetensors")["lm_head.weight"]
    assert all(not head[i].any() for i in specials) and head[len(specials)].any()


def test_existing_model_is_kept_and_another_spec_rewrites_it(tiny: Path) -> None:
    stamp = (tiny / "model.safetensors").stat().st_mtime_ns
    write_tiny_model(tiny)
    assert (tiny / "model.safetensors").stat().st_mtime_ns == stamp
    assert not is_tiny_model(tiny, TinyLlamaSpec(seed=1))
