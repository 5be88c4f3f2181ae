"""Synthetic prompts of an exact length.

With a tokenizer (a `tokenizer.json`, or a Hugging Face model folder holding one; needs the optional
`tokenizers` package) a prompt has exactly the asked number of tokens as that tokenizer encodes it,
special tokens included. Without one, a prompt of N tokens is N whitespace-separated words: the
simulated engine counts prompt tokens as whitespace-separated words (the contract), so the count is
exact there and an approximation for real tokenizers.

Each prompt starts at a random place in a long pseudo-random text, so prompts share no common
prefix (no accidental prefix-cache hits on a real engine).
"""

from pathlib import Path
from typing import Any

import numpy as np

from loadgen.errors import LoadError

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de", "po", "qua", "zen", "bri", "sto", "fal")
_CORPUS_WORDS = 1 << 16


def _words(rng: np.random.Generator, n: int) -> list[str]:
    vocab = [a + b for a in _SYLLABLES for b in _SYLLABLES] + [a + b + c for a in _SYLLABLES[:6]
                                                               for b in _SYLLABLES for c in _SYLLABLES[:4]]
    return [vocab[i] for i in rng.integers(len(vocab), size=n)]


def load_tokenizer(path: Path) -> Any:
    """A `tokenizers.Tokenizer` from a tokenizer.json file or a folder that holds one."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise LoadError("a tokenizer was given but the `tokenizers` package is missing; "
                        "pip install tokenizers, or leave the tokenizer out to use word counts") from None
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise LoadError(f"{path}: no tokenizer.json there; give the file or a model folder that holds it")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust library raises its own exception type
        raise LoadError(f"{file}: not a valid tokenizer.json ({e})") from None


class PromptFactory:
    """Makes prompts of N tokens and counts the tokens of generated text."""

    def __init__(self, tokenizer: Any = None, seed: int = 0):
        self.tokenizer = tokenizer
        rng = np.random.default_rng(seed)
        self._words = _words(rng, _CORPUS_WORDS)
        self._ids: list[int] = []
        if tokenizer is not None:
            self._ids = tokenizer.encode(" ".join(self._words[:8192]), add_special_tokens=False).ids

    def count(self, text: str) -> int:
        """Tokens in a piece of generated text (the tokenizer's count, or whitespace-separated words)."""
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
        return len(text.split())

    def make(self, n_tokens: int, rng: np.random.Generator) -> str:
        if self.tokenizer is None:
            start = int(rng.integers(_CORPUS_WORDS))
            words = self._words
            picked = words[start:start + n_tokens]
            while len(picked) < n_tokens:
                picked += words[: n_tokens - len(picked)]
            return " ".join(picked)
        return self._make_tokenized(n_tokens, rng)

    def _slice(self, start: int, n: int) -> list[int]:
        ids = self._ids
        out = ids[start:start + n]
        while len(out) < n:
            out += ids[: n - len(out)]
        return out

    def _make_tokenized(self, n_tokens: int, rng: np.random.Generator) -> str:
        """Decode a slice of token ids, re-encode, and adjust the slice until the count is exact."""
        start = int(rng.integers(len(self._ids)))
        take = n_tokens
        best = ""
        best_err = None
        for _ in range(12):
            text = self.tokenizer.decode(self._slice(start, max(take, 0)))
            got = len(self.tokenizer.encode(text).ids)
            err = got - n_tokens
            if best_err is None or abs(err) < abs(best_err):
                best, best_err = text, err
            if err == 0:
                break
            take -= err
        return best
