"""Training data: a corpus tokenised once into a memory-mapped token cache, and the naive baseline.

The cache is keyed by (corpus content hash, tokenizer fingerprint, sequence length): the same text
with the same tokenizer is tokenised once and reused by every run, across processes (a file written
aside and renamed, so an interrupted build never looks finished). Documents are joined with the
tokenizer's EOS token; samples are consecutive, non-overlapping windows of ``seq_len + 1`` tokens (inputs
and next-token labels). ``OnTheFlyDataset`` tokenises raw text at every access: the baseline the
token cache is measured against.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unbottle.core.errors import ConfigError
from unbottle.core.naming import given, opt
from unbottle.data import CORPORA, EVAL_TEXT

HELD_OUT = EVAL_TEXT


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Text files in a fixed order, with a description for messages."""

    files: tuple[Path, ...]
    description: str

    def texts(self) -> list[str]:
        out = []
        for f in self.files:
            try:
                out.append(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read corpus file {f}: {exc}; give UTF-8 text files") from None
        return out

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()[:16]


def default_corpora() -> tuple[Corpus, Corpus]:
    """(train, validation): the five packaged Austen novels, and *Persuasion* held out."""
    root = resources.files(CORPORA)
    train = tuple(sorted(Path(str(p)) for p in root.joinpath("austen").iterdir() if p.name.endswith(".txt")))
    held = (Path(str(root.joinpath(HELD_OUT))),)
    return Corpus(train, "packaged Austen novels (5)"), Corpus(held, "packaged Persuasion (held out)")


def corpus_at(path: str) -> Corpus:
    """A ``.txt`` file or a folder of them (sorted)."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = tuple(sorted(p.rglob("*.txt")))
        if not files:
            raise ConfigError(
                f"{given('data', path, quote=True)} is a folder without .txt files; "
                "give text files or a folder of them"
            )
        return Corpus(files, f"{len(files)} file(s) in {p}")
    if p.is_file():
        return Corpus((p,), str(p))
    raise ConfigError(
        f"{given('data', path, quote=True)} does not exist; give a UTF-8 text file or a folder of .txt files"
    )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides the token ids (the fast tokenizer's full definition)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("UNBOTTLE_CACHE", Path.home() / ".cache" / "unbottle")) / "tokens"


def token_cache(corpus: Corpus, tokenizer: Any, seq_len: int, root: Path | None = None) -> tuple[Path, bool]:
    """The cached token file for this corpus, tokenizer and length; ``(path, built_now)``.

    Raises:
        ConfigError: the corpus gives fewer than ``seq_len + 1`` tokens.
    """
    key = f"{corpus.content_hash()}-{tokenizer_fingerprint(tokenizer)}-{seq_len}"
    folder = root or cache_root()
    path = folder / f"{key}.npy"
    if path.exists():
        return path, False
    ids = _tokenise(corpus, tokenizer)
    if ids.size < seq_len + 1:
        raise ConfigError(
            f"{corpus.description} gives {ids.size} tokens, fewer than one sequence of {seq_len} (+1 for the "
            f"labels); give more text or a smaller {opt('seq_len')}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.npy"
    np.save(tmp, ids)
    os.replace(tmp, path)
    return path, True


def _tokenise(corpus: Corpus, tokenizer: Any) -> np.ndarray:
    eos = getattr(tokenizer, "eos_token_id", None)
    parts: list[int] = []
    for text in corpus.texts():
        parts += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if eos is not None:
            parts.append(eos)
    vocab = len(tokenizer)
    return np.asarray(parts, dtype=np.uint16 if vocab <= 2**16 else np.uint32)


class TokenDataset:
    """Non-overlapping windows of ``seq_len + 1`` tokens read from the memory-mapped cache."""

    def __init__(self, path: Path, seq_len: int) -> None:
        self.path, self.seq_len = path, seq_len
        self.tokens = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return (self.tokens.size - 1) // self.seq_len

    def __getitem__(self, i: int) -> Any:
        start = i * self.seq_len
        return torch.from_numpy(self.tokens[start : start + self.seq_len + 1].astype(np.int64))


class OnTheFlyDataset:
    """The naive baseline: raw text, tokenised again at every access.

    Window ``i`` covers the same text as the token cache's window ``i`` (character spans found once
    from one offset-mapped pass; a few characters past the span are tokenised too, so a merge across
    its end comes out as in the whole text), so both pipelines feed the same batches and their loss
    curves can be compared; every ``__getitem__`` tokenises its span from scratch, as an untuned loader
    does.
    """

    def __init__(self, corpus: Corpus, tokenizer: Any, seq_len: int, n_items: int | None = None) -> None:
        self.text = "\n".join(corpus.texts())
        self.tokenizer, self.seq_len = tokenizer, seq_len
        offsets = tokenizer(self.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
            "offset_mapping"
        ]
        windows = (len(offsets) - 1) // seq_len
        if windows < 1:
            raise ConfigError(f"{corpus.description} gives fewer than one sequence of {seq_len} tokens")
        n = windows if n_items is None else min(n_items, windows)
        self.spans = [(offsets[i * seq_len][0], offsets[i * seq_len + seq_len][1]) for i in range(n)]

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> Any:
        a, b = self.spans[i]
        # a few characters past the span, so its last tokens merge as they do in the whole text
        ids = self.tokenizer(self.text[a : b + _MARGIN], add_special_tokens=False, verbose=False)["input_ids"]
        ids = (ids + ids[-1:] * (self.seq_len + 1))[: self.seq_len + 1]
        return torch.tensor(ids, dtype=torch.long)


_MARGIN = 64  # characters
