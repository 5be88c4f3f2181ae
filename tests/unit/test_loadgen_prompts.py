"""Prompts have exactly the asked length: in words (the simulated engine's contract) or in tokens."""

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from loadgen.errors import LoadError
from loadgen.prompts import PromptFactory, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tiny byte-level BPE with a BOS token, trained here (no download)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = ["the quick brown fox jumps over the lazy dog", "lorem ipsum dolor sit amet kalo mine"] * 50
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    d = tmp_path_factory.mktemp("tok")
    tok.save(str(d / "tokenizer.json"))
    return d


def test_word_prompts_have_n_words_and_differ():
    f = PromptFactory(seed=1)
    rng = np.random.default_rng(0)
    for n in (1, 7, 300, 70000):
        assert len(f.make(n, rng).split()) == n
    a, b = f.make(50, rng), f.make(50, rng)
    assert a != b and a.split()[0:3] != b.split()[0:3]
    assert f.count("tok tok  tok\n") == 3


@pytest.mark.parametrize("n", [1, 2, 17, 256, 3000])
def test_tokenizer_prompts_have_exact_token_counts(tokenizer_dir, n):
    tok = load_tokenizer(tokenizer_dir)
    f = PromptFactory(tok, seed=2)
    rng = np.random.default_rng(n)
    for _ in range(5):
        assert len(tok.encode(f.make(n, rng)).ids) == n   # special tokens included, as a server counts


def test_bad_tokenizer_paths(tmp_path):
    with pytest.raises(LoadError, match=r"no tokenizer\.json there"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(LoadError, match=r"not a valid tokenizer\.json"):
        load_tokenizer(tmp_path)
