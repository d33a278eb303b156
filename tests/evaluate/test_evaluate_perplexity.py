"""Perplexity equals the model's own loss over the same windows; windows score every token once."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from unbottle.core.errors import EvalError
from unbottle.evaluation import load_text, perplexity
from unbottle.evaluation.common import plan_windows
from unbottle.evaluation.corpus import default_text
from unbottle.sources import Loaded

TEXT = default_text()[0][2000:6000]  # 4000 ASCII characters: 4000 byte tokens for tiny-llama


def reference_perplexity(loaded: Loaded, text: str, eval_tokens: int, window: int, stride: int) -> Any:
    """Per-window (summed NLL, scored tokens) from the model's own loss with -100 labels, and the ppl."""
    ids = [1] + loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor(ids[:eval_tokens])[None]  # (1, N)
    n, step = ids.shape[1], min(stride, window - 1)
    sums, counts, prev_end = [], [], 0
    for begin in range(0, n, step):
        end = min(begin + window, n)
        x = ids[:, begin:end]
        labels = x.clone()
        labels[:, : max(prev_end - begin, 1)] = -100  # tokens already scored (and the first, unpredicted)
        count = int((labels[:, 1:] != -100).sum())
        with torch.no_grad():
            loss = loaded.model(input_ids=x, labels=labels).loss  # mean NLL over the scored tokens
        sums.append(loss.item() * count)
        counts.append(count)
        prev_end = end
        if end == n:
            break
    return sums, counts, math.exp(sum(sums) / sum(counts))


@pytest.mark.parametrize("window,stride", [(256, 256), (256, 100)])
def test_perplexity_equals_model_loss_over_the_same_windows(
    tiny_llama: Loaded, window: int, stride: int
) -> None:
    result = perplexity(tiny_llama, TEXT, eval_tokens=1500, window=window, stride=stride, batch_size=3)
    sums, counts, expected = reference_perplexity(tiny_llama, TEXT, 1500, window, stride)
    assert result.value == pytest.approx(expected, rel=1e-5), "corpus perplexity differs from HF loss"
    assert result.weights == [float(c) for c in counts]
    torch.testing.assert_close(
        torch.tensor(result.scores),
        torch.tensor([s / c for s, c in zip(sums, counts, strict=True)]),
        rtol=1e-5,
        atol=1e-6,
        msg="per-window mean NLL differs from HF loss",
    )
    assert (result.metric, result.higher_is_better, result.score_name, result.score_unit) == (
        "perplexity",
        False,
        "window_nll",
        "nats/token",
    )


def test_perplexity_of_uniform_logits_model_is_vocab_size(uniform_llama: Loaded) -> None:
    result = perplexity(uniform_llama, TEXT, eval_tokens=600, window=128, stride=128)
    assert result.value == pytest.approx(512, rel=1e-5)
    assert result.scores == pytest.approx([math.log(512)] * len(result.scores), rel=1e-6)


@pytest.mark.parametrize(
    "n,window,stride", [(1000, 128, 128), (1000, 128, 50), (1000, 128, 1), (128, 128, 128), (129, 128, 127)]
)
def test_plan_windows_scores_every_token_but_the_first_exactly_once(n: int, window: int, stride: int) -> None:
    windows = plan_windows(n, window, stride)
    scored = [t for w in windows for t in range(w.first_target, w.end)]
    assert sorted(scored) == list(range(1, n)), "a token was skipped or scored twice"
    assert sum(w.n_scored for w in windows) == n - 1
    assert all(w.begin < w.first_target <= w.end and w.length <= window for w in windows)
    assert [w.begin for w in windows] == list(
        range(0, len(windows) * min(stride, window - 1), min(stride, window - 1))
    )
    assert windows[-1].end == n


def test_perplexity_bookkeeping_adds_up_to_eval_tokens_minus_one(tiny_llama: Loaded) -> None:
    result = perplexity(tiny_llama, TEXT, eval_tokens=1000, window=128, stride=128, batch_size=4)
    d = result.details
    assert (d["eval_tokens"], d["eval_tokens_requested"], d["text_tokens"]) == (1000, 1000, len(TEXT) + 1)
    assert d["scored_tokens"] == sum(result.weights) == 999
    assert d["n_windows"] == len(result.scores) == len(result.sample_ids) == 8  # ceil(999 / 127)
    assert (d["window"], d["stride"], d["step"], d["batch_size"]) == (128, 128, 127, 4)
    assert math.exp(d["total_nll_nats"] / 999) == pytest.approx(result.value, rel=1e-12)


def test_perplexity_uses_what_the_text_has_when_shorter_than_eval_tokens(tiny_llama: Loaded) -> None:
    result = perplexity(tiny_llama, TEXT[:300], eval_tokens=16384, window=128, stride=128)
    assert (result.details["eval_tokens"], result.details["eval_tokens_requested"]) == (301, 16384)
    assert result.details["scored_tokens"] == 300


def test_perplexity_records_bos_prepended_and_leaves_it_out_without_one(tiny_llama: Loaded) -> None:
    with_bos = perplexity(tiny_llama, TEXT, eval_tokens=300, window=128, stride=128)
    assert with_bos.details["bos_prepended"] is True
    no_bos = Loaded(tiny_llama.model, NoBos(tiny_llama.tokenizer), tiny_llama.info)
    without = perplexity(no_bos, TEXT, eval_tokens=300, window=128, stride=128)
    assert without.details["bos_prepended"] is False
    assert without.details["text_tokens"] == with_bos.details["text_tokens"] - 1
    assert without.value != with_bos.value


def test_perplexity_sample_ids_are_stable_and_pair_across_models(tiny_llama: Loaded) -> None:
    first = perplexity(tiny_llama, TEXT, eval_tokens=700, window=128, stride=64)
    again = perplexity(tiny_llama, TEXT, eval_tokens=700, window=128, stride=64, batch_size=1)
    other = Loaded(copy.deepcopy(tiny_llama.model), tiny_llama.tokenizer, tiny_llama.info)
    with torch.no_grad():
        other.model.lm_head.weight.mul_(1.5)
    changed = perplexity(other, TEXT, eval_tokens=700, window=128, stride=64)
    assert first.sample_ids == again.sample_ids == changed.sample_ids
    assert len(set(first.sample_ids)) == len(first.sample_ids)
    assert first.sample_ids[:2] == ["tokens[0:128]", "tokens[64:192]"]
    torch.testing.assert_close(
        torch.tensor(first.scores), torch.tensor(again.scores), msg="batching changed NLL"
    )
    assert all(a != b for a, b in zip(changed.scores, first.scores, strict=True)), "the change did not show"


def test_perplexity_defaults_to_the_packaged_corpus(tiny_llama: Loaded) -> None:
    result = perplexity(tiny_llama, eval_tokens=256, window=128, stride=128)
    assert "persuasion.txt" in result.details["corpus"]
    assert result.details["text_tokens"] > 400_000
    assert result.seconds > 0


def test_load_text_reads_a_folder_of_txt_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "c.md").write_text("ignored", encoding="utf-8")
    text, description = load_text(tmp_path)
    assert text == "first\n\nsecond"
    assert "2 .txt files" in description and "a.txt, b.txt" in description
    assert load_text(tmp_path / "a.txt") == ("first", f"file {tmp_path / 'a.txt'}")


def test_perplexity_reads_source_path_when_no_text_given(tiny_llama: Loaded, tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_text(TEXT, encoding="utf-8")
    from_file = perplexity(tiny_llama, source=tmp_path / "book.txt", eval_tokens=300, window=128, stride=128)
    given = perplexity(tiny_llama, TEXT, source="my label", eval_tokens=300, window=128, stride=128)
    assert from_file.value == given.value
    assert from_file.details["corpus"] == f"file {tmp_path / 'book.txt'}"
    assert given.details["corpus"] == "my label"


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(text=""), ["empty"]),
        (dict(text="  \n\t "), ["empty"]),
        (dict(text="hello"), ["6 tokens", "lower window to 6", "window of 128"]),
        (dict(eval_tokens=100), ["eval_tokens is 100", "raise eval_tokens", "window of 128"]),
        (dict(window=5000, stride=5000), ["max_position_embeddings=4096", "set window to 4096"]),
        (dict(eval_tokens=0), ["eval_tokens=0", "positive"]),
        (dict(window=0), ["window=0", "positive"]),
        (dict(window=1, stride=1), ["at least 2"]),
        (dict(stride=-1), ["stride=-1", "positive"]),
        (dict(batch_size=0), ["batch_size=0", "positive"]),
        (dict(stride=256), ["stride=256", "larger than window=128", "set stride to"]),
        (dict(source="no/such/book.txt"), ["no such file or folder", "no/such/book.txt"]),
    ],
)
def test_perplexity_rejects_bad_input_with_a_clear_message(
    tiny_llama: Loaded, kwargs: dict[str, Any], words: list[str]
) -> None:
    args = dict(text=TEXT, eval_tokens=1000, window=128, stride=128) | kwargs
    if "source" in kwargs:
        args.pop("text")
    with pytest.raises(EvalError) as info:
        perplexity(tiny_llama, **args)
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


def test_perplexity_names_the_file_and_byte_offset_of_non_utf8_text(
    tiny_llama: Loaded, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf" + "é".encode("latin-1") + b" au lait")
    with pytest.raises(EvalError, match=r"latin1\.txt is not UTF-8 text: byte 0xe9 at byte offset 3"):
        perplexity(tiny_llama, source=path)


def test_load_text_refuses_a_folder_without_txt_files(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("not read", encoding="utf-8")
    with pytest.raises(EvalError, match=r"holds no \.txt files"):
        load_text(tmp_path)


def test_perplexity_refuses_models_without_tokenizer_or_not_causal(tiny_llama: Loaded) -> None:
    no_tokenizer = Loaded(tiny_llama.model, None, tiny_llama.info)
    with pytest.raises(EvalError, match="needs a tokenizer"):
        perplexity(no_tokenizer, TEXT)
    masked = Loaded(
        tiny_llama.model, tiny_llama.tokenizer, dataclasses.replace(tiny_llama.info, task="masked-lm")
    )
    with pytest.raises(EvalError, match="needs a causal LM"):
        perplexity(masked, TEXT)


class NoBos:
    """A tokenizer without a BOS token, tokenising like the one it wraps."""

    bos_token_id = None

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)


@pytest.mark.slow
def test_perplexity_of_smollm2_on_persuasion_is_plausible() -> None:
    from unbottle.models import load

    loaded = load("smollm2-135m")
    assert loaded.tokenizer("Hello")["input_ids"][0] != loaded.tokenizer.bos_token_id, "tokenizer adds BOS"
    result = perplexity(loaded, eval_tokens=1024)
    print(f"smollm2-135m perplexity on 1024 Persuasion tokens: {result.value:.3f} ({result.seconds:.1f} s)")
    assert result.details["bos_prepended"] is True and result.details["scored_tokens"] == 1023
    assert 5 < result.value < 60
