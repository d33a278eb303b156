"""Evaluation text and its token stream, shared by perplexity and agreement.

Both evaluators must see the same tokens in the same windows, or their per-window scores would not
pair up; so the text is read, tokenised, given the model's BOS convention (``convention.py``) and
truncated in exactly one place.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from unbottle.core.errors import EvalError
from unbottle.core.naming import given, opt
from unbottle.data import EVAL_DESCRIPTION, EVAL_TEXT, packaged_text
from unbottle.evaluation.convention import BosConvention, detect_convention

CORPUS, CORPUS_DESCRIPTION = EVAL_TEXT, EVAL_DESCRIPTION


def load_text(path: str | Path) -> tuple[str, str]:
    """Read evaluation text from a UTF-8 file, or from every ``*.txt`` file of a folder.

    Args:
        path: a text file, or a folder whose ``*.txt`` files are read in name order and joined with
            a blank line between them.

    Returns:
        ``(text, description)``; the description names where the text came from.

    Raises:
        EvalError: the path is missing, a folder holds no ``.txt`` file, a file is not UTF-8, or the
            text is empty.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.glob("*.txt") if f.is_file())
        if not files:
            raise EvalError(
                f"folder {p} holds no .txt files; give a UTF-8 text file or a folder of .txt files"
            )
        text = "\n\n".join(_read_utf8(f) for f in files)
        description = f"folder {p} ({len(files)} .txt files: {', '.join(f.name for f in files[:5])}"
        description += ", ...)" if len(files) > 5 else ")"
    elif p.is_file():
        text, description = _read_utf8(p), f"file {p}"
    else:
        raise EvalError(
            f"no such file or folder: {str(path)!r}; give a UTF-8 text file or a folder of .txt files"
        )
    check_not_empty(text, description)
    return text, description


def default_text() -> tuple[str, str]:
    """The packaged Persuasion corpus and its description."""
    return packaged_text(EVAL_TEXT), EVAL_DESCRIPTION


def resolve_text(text: str | None, source: str | None) -> tuple[str, str]:
    """The text to evaluate and its description.

    ``text`` wins; ``source`` then only labels it. Without ``text``, ``source`` is a file or folder
    to read; without both, the packaged corpus.
    """
    if text is not None:
        description = source or f"given text ({len(text):,} characters)"
        check_not_empty(text, description)
        return text, description
    if source is not None:
        return load_text(source)
    return default_text()


def check_not_empty(text: str, description: str) -> None:
    if not text.strip():
        raise EvalError(f"the evaluation text is empty ({description}); give a text with some words in it")


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvalError(
            f"{path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"({exc.reason}); convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or leave it out"
        ) from None


@dataclasses.dataclass
class TokenStream:
    """The evaluated tokens: the convention's prefix (if any) then the text's tokens, cut to the budget.

    The prefix is stored once, at the start, in every mode; in ``every-window`` mode every window
    puts ``ids[:len(prefix)]`` before its span of the text (see ``plan_windows``).

    Attributes:
        ids: token ids, shape ``(N,)``: ``prefix + text ids``, ``N <= requested``.
        convention: the model's BOS convention (``detect_convention``).
        available: tokens the whole text gave (prefix included) before truncation.
        requested: the token budget asked for.
        start: text tokens skipped before ``ids``' text part (0: from the text's start).
    """

    ids: Any
    convention: BosConvention
    available: int
    requested: int
    start: int = 0

    @property
    def bos_prepended(self) -> bool:
        """Whether a prefix (the BOS) starts the stream: the key older results carry."""
        return bool(self.convention.prefix)

    @property
    def window_prefix(self) -> int:
        """Prefix tokens put before every window: ``len(prefix)`` in ``every-window`` mode, else 0."""
        return len(self.convention.window_prefix)


def token_stream(
    tokenizer: Any, text: str, eval_tokens: int, window: int, description: str, start: int = 0
) -> TokenStream:
    """Tokenise ``text`` once (no special tokens), skip its first ``start`` tokens, put the
    convention's prefix first, keep ``eval_tokens``.

    ``eval_tokens`` counts the prefix once, as it always counted the stream's BOS: the text gives
    ``eval_tokens - len(prefix)`` tokens, and every one of them is scored, in every mode.

    Raises:
        EvalError: fewer tokens than one window remain, or (``every-window``) the window is too
            short to hold the prefix and two text tokens.
    """
    convention = detect_convention(tokenizer)
    prefix = list(convention.prefix)
    if convention.mode == "every-window" and window < len(prefix) + 2:
        raise EvalError(
            f"{given('window', window)} given, but this tokenizer starts every window with {len(prefix)} "
            f"prefix token(s) {prefix}, leaving fewer than 2 text tokens; "
            f"set {opt('window')} to {len(prefix) + 2} or more"
        )
    text_ids = list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    if start and len(text_ids) - start < eval_tokens - len(prefix):
        raise EvalError(
            f"{description} gives {len(text_ids)} tokens; its held-out part starts at token {start} and "
            f"needs {eval_tokens - len(prefix)} more, so the text must hold at least "
            f"{start + eval_tokens - len(prefix)} tokens: give a longer text or lower {opt('eval_tokens')}"
        )
    ids = prefix + text_ids[start:]
    n = min(len(ids), eval_tokens)
    if n < window:
        if eval_tokens < window:
            fix = f"raise {opt('eval_tokens')} to at least {window} or lower {opt('window')}"
        else:
            fix = f"give a longer text or lower {opt('window')} to {len(ids)} or less"
        raise EvalError(
            f"{description} gives {len(ids)} tokens (BOS included) and {opt('eval_tokens')} is "
            f"{eval_tokens}, "
            f"so {n} tokens are evaluated: fewer than one window of {window}; {fix}"
        )
    return TokenStream(
        ids=torch.tensor(ids[:n], dtype=torch.long),
        convention=convention,
        available=len(ids),
        requested=eval_tokens,
        start=start,
    )
