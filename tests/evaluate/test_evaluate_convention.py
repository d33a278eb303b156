"""Evaluators follow the model's own BOS convention: BOS at every window when the tokenizer adds it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tokenizers.processors import TemplateProcessing

from unbottle.evaluation import agreement, load_task, multiple_choice, perplexity
from unbottle.evaluation.common import plan_windows
from unbottle.evaluation.convention import BosConvention, detect_convention
from unbottle.evaluation.corpus import default_text
from unbottle.evaluation.multiple_choice import encode_item, option_logprobs
from unbottle.sources import Loaded
from unbottle.sources.tiny import byte_tokenizer

TEXT = default_text()[0][2000:6000]  # 4000 ASCII characters: 4000 byte tokens
BOS = 1  # "<s>" of the tiny byte tokenizer


def bos_adding_tokenizer(template: str = "<s> $A") -> Any:
    """The tiny byte tokenizer with a post-processor that adds ``<s>`` (and maybe ``</s>``) to every text."""
    tokenizer = byte_tokenizer()
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=template, special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return tokenizer


class Recorder(torch.nn.Module):
    """A causal LM that remembers every ``input_ids`` it was given."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config, self.inputs = inner, inner.config, []

    def forward(self, input_ids: torch.Tensor, cache: Any = None, **kwargs: Any) -> Any:
        self.inputs.append(input_ids.clone())
        if cache is not None:
            kwargs["cache"] = cache
        return self.inner(input_ids=input_ids, **kwargs)


class NoBos:
    """A tokenizer without a BOS token that only forwards ``__call__``, tokenising like ``inner``."""

    bos_token_id = None

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)


@pytest.fixture(scope="module")
def bos_llama(tiny_llama: Loaded) -> Loaded:
    """tiny-llama whose tokenizer puts BOS before every sequence, as Gemma's does."""
    return Loaded(Recorder(tiny_llama.model), bos_adding_tokenizer(), tiny_llama.info)


def reference_every_window(model: Any, text: str, eval_tokens: int, window: int, stride: int) -> Any:
    """Per window (summed NLL, scored tokens) of ``[BOS] + text`` inputs: plain forward + cross entropy."""
    text_ids = byte_tokenizer()(text, add_special_tokens=False)["input_ids"][: eval_tokens - 1]
    span, sums, counts, prev_end = window - 1, [], [], 0  # text tokens per window
    for begin in range(0, len(text_ids), min(stride, span - 1)):
        end = min(begin + span, len(text_ids))
        x = torch.tensor([BOS] + text_ids[begin:end])[None]  # (1, T)
        targets = x[0, 1:].clone()  # (T-1,): text tokens only, the BOS is never a target
        targets[: max(prev_end - begin, 0)] = -100  # scored by the previous window
        with torch.no_grad():
            logits = model(input_ids=x).logits[0, :-1].float()  # (T-1, V)
        nll = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none")  # (T-1,), 0 where -100
        sums.append(nll.double().sum().item())
        counts.append(int((targets != -100).sum()))
        prev_end = end
        if end == len(text_ids):
            break
    return sums, counts


def test_detect_convention_finds_the_prefix_and_suffix_the_tokenizer_adds() -> None:
    assert detect_convention(bos_adding_tokenizer()) == BosConvention("every-window", (BOS,), ())
    both = detect_convention(bos_adding_tokenizer("<s> $A </s>"))
    assert both == BosConvention("every-window", (BOS,), (2,))
    assert both.details() == {
        "bos": "every-window",
        "prefix_ids": [1],
        "suffix_ids": [2],
        "bos_prepended": True,
    }
    assert both.window_prefix == (BOS,)


def test_detect_convention_keeps_bos_at_stream_start_when_the_tokenizer_adds_nothing() -> None:
    plain = detect_convention(byte_tokenizer())
    assert plain == BosConvention("stream-start", (BOS,), ()) and plain.window_prefix == ()
    assert detect_convention(NoBos(byte_tokenizer())) == BosConvention("none", (), ())
    assert detect_convention(NoBos(byte_tokenizer())).details()["bos_prepended"] is False
    eos_only = detect_convention(bos_adding_tokenizer("$A </s>"))
    assert eos_only == BosConvention("stream-start", (BOS,), (2,)), "a suffix alone is no prefix"


def test_detect_convention_takes_leading_special_ids_when_the_text_retokenises() -> None:
    class Retokenising:
        all_special_ids = [0, 1, 2]
        bos_token_id = 1

        def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
            return {"input_ids": [1, 1, 7, 8, 9, 2] if add_special_tokens else [5, 6]}

    assert detect_convention(Retokenising()) == BosConvention("every-window", (1, 1), (2,))


@pytest.mark.parametrize(
    "n,window,stride,prefix",
    [(1000, 128, 128, 1), (1000, 128, 50, 1), (1000, 128, 1, 1), (128, 128, 128, 1), (500, 64, 64, 3)],
)
def test_plan_windows_with_a_prefix_scores_every_token_after_it_exactly_once(
    n: int, window: int, stride: int, prefix: int
) -> None:
    windows = plan_windows(n, window, stride, prefix)
    scored = [t for w in windows for t in range(w.first_target, w.end)]
    assert sorted(scored) == list(range(prefix, n)), "a token was skipped, scored twice, or the prefix scored"
    assert all(w.prefix == prefix and w.length <= window and w.begin >= prefix for w in windows)
    assert windows[0].first_target == windows[0].begin == prefix and windows[0].length == window
    steps = {b.begin - a.begin for a, b in zip(windows, windows[1:], strict=False)}
    assert steps <= {min(stride, window - prefix - 1)}
    assert windows[-1].end == n and windows[0].sample_id == f"prefix+tokens[{prefix}:{window}]"


@pytest.mark.parametrize("window,stride,batch_size", [(128, 128, 3), (256, 100, 1)])
def test_perplexity_starts_every_window_with_bos_when_the_tokenizer_adds_it(
    bos_llama: Loaded, window: int, stride: int, batch_size: int
) -> None:
    bos_llama.model.inputs.clear()
    result = perplexity(
        bos_llama, TEXT, eval_tokens=1500, window=window, stride=stride, batch_size=batch_size
    )
    rows = [row for x in bos_llama.model.inputs for row in x.tolist()]  # every model input
    assert len(rows) == len(result.scores) == result.details["n_windows"]
    assert [row[0] for row in rows] == [BOS] * len(rows), "a window does not start with BOS"
    assert sum(row[1:].count(BOS) for row in rows) == 0, "BOS inside a window"
    assert max(len(row) for row in rows) == window
    d = result.details
    assert (d["bos"], d["prefix_ids"], d["suffix_ids"], d["bos_prepended"]) == ("every-window", [1], [], True)
    assert d["scored_tokens"] == sum(result.weights) == 1499, "the prefix is not scored; every text token is"
    assert d["step"] == min(stride, window - 2)
    sums, counts = reference_every_window(bos_llama.model.inner, TEXT, 1500, window, stride)
    assert result.weights == [float(c) for c in counts]
    expected = math.exp(math.fsum(sums) / sum(counts))
    assert result.value == pytest.approx(expected, rel=1e-6), (
        "perplexity differs from forward + cross entropy"
    )
    torch.testing.assert_close(
        torch.tensor(result.scores, dtype=torch.float64),
        torch.tensor([s / c for s, c in zip(sums, counts, strict=True)], dtype=torch.float64),
        rtol=1e-6,
        atol=1e-6,
    )


def test_perplexity_when_the_tokenizer_adds_nothing_keeps_bos_once_at_the_stream_start(
    tiny_llama: Loaded,
) -> None:
    result = perplexity(tiny_llama, TEXT, eval_tokens=700, window=128, stride=128)
    assert result.sample_ids[:3] == ["tokens[0:128]", "tokens[127:255]", "tokens[254:382]"]
    assert result.weights == [127.0] * 5 + [64.0]
    assert (result.details["bos"], result.details["prefix_ids"], result.details["bos_prepended"]) == (
        "stream-start",
        [1],
        True,
    )
    ids = torch.tensor([BOS] + tiny_llama.tokenizer(TEXT, add_special_tokens=False)["input_ids"][:699])
    total = 0.0
    with torch.no_grad():
        for w in plan_windows(700, 128, 128):  # BOS only in the first window: today's behaviour
            logits = tiny_llama.model(input_ids=ids[None, w.begin : w.end]).logits[0, :-1]  # (T-1, V)
            nll = F.cross_entropy(logits, ids[w.begin + 1 : w.end], reduction="none")  # (T-1,)
            total += nll[w.first_target - w.begin - 1 :].double().sum().item()
    assert result.value == pytest.approx(math.exp(total / 699), rel=1e-6)


def test_agreement_follows_the_every_window_convention_and_pairs_with_perplexity(bos_llama: Loaded) -> None:
    settings = dict(eval_tokens=700, window=128, n_prompts=3, prompt_length=16, new_tokens=4, batch_size=3)
    bos_llama.model.inputs.clear()
    kl, top1, greedy = agreement(bos_llama, bos_llama, TEXT, **settings)
    ppl = perplexity(bos_llama, TEXT, eval_tokens=700, window=128, stride=128)
    assert kl.sample_ids == top1.sample_ids == ppl.sample_ids and kl.weights == ppl.weights
    assert kl.sample_ids[0] == "prefix+tokens[1:128]" and sum(kl.weights) == 699
    assert kl.value == pytest.approx(0.0, abs=1e-6) and top1.value == 1.0
    assert greedy.sample_ids == [
        "prompt0:prefix+tokens[1:16]",
        "prompt1:prefix+tokens[343:358]",
        "prompt2:prefix+tokens[685:700]",
    ]
    prompts = [x for x in bos_llama.model.inputs if x.shape == (3, 16)]
    assert prompts and all(x[:, 0].tolist() == [BOS] * 3 for x in prompts), "a prompt does not start with BOS"
    assert kl.details["bos"] == "every-window" and greedy.details["prefix_ids"] == [1]


def test_multiple_choice_starts_each_item_with_the_prefix_once(tiny_llama: Loaded, bos_llama: Loaded) -> None:
    task = load_task("sports_understanding")
    with_bos = encode_item(bos_llama, task, 0)
    plain = encode_item(tiny_llama, task, 0)
    assert with_bos == plain, "the BOS-adding tokenizer must give today's [BOS] + prompt + option"
    assert all(ids[0] == BOS and ids[1] != BOS for ids, _ in with_bos)
    no_bos = Loaded(tiny_llama.model, NoBos(tiny_llama.tokenizer), tiny_llama.info)
    assert [ids for ids, _ in encode_item(no_bos, task, 0)] == [ids[1:] for ids, _ in plain]
    a = option_logprobs(bos_llama, task, [0, 7], length_normalize=False, batch_size=4)
    b = option_logprobs(tiny_llama, task, [0, 7], length_normalize=False, batch_size=4)
    assert a == b
    d = multiple_choice(bos_llama, task, max_items=4).details
    assert (d["bos"], d["prefix_ids"], d["bos_prepended"]) == ("every-window", [1], True)
    assert multiple_choice(tiny_llama, task, max_items=4).details["bos"] == "stream-start"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/tmp/models/gemma-3-270m-q4_k_m.gguf").exists(), reason="no Gemma 3 GGUF here")
def test_perplexity_of_gemma3_puts_bos_at_every_window() -> None:
    from unbottle.models import load

    loaded = load("/tmp/models/gemma-3-270m-q4_k_m.gguf")
    result = perplexity(loaded, eval_tokens=1024)
    print(f"gemma-3-270m perplexity on 1024 Persuasion tokens: {result.value:.3f} ({result.seconds:.1f} s)")
    assert result.details["bos"] == "every-window" and result.details["prefix_ids"] == [2]
    assert 10 < result.value < 60, "without BOS at every window Gemma 3 scores ~2.4x higher"
