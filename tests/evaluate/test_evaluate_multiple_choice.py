"""Multiple choice picks the option the model gives most probability; tasks load or fail clearly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from unbottle.core.errors import EvalError
from unbottle.evaluation import TASKS, load_task, multiple_choice
from unbottle.evaluation.multiple_choice import choose_items, option_logprobs, split_encode
from unbottle.sources import Loaded

INPUTS = ["The sky is", "Water is wet", "Cats bark", "Two and two", "Paris is in France", "Fish fly"]


def yes_no_task(write_task: Callable[..., Path], correct: str) -> Path:
    """Items whose options are the single tokens "y" and "n" (in alternating order), ``correct`` right."""
    examples = []
    for i, text in enumerate(INPUTS):
        options = ["y", "n"] if i % 2 == 0 else ["n", "y"]
        examples.append({"input": text, "target_scores": {o: int(o == correct) for o in options}})
    return write_task(examples, example_input_prefix="\nQ: ", example_output_prefix="\nA: ")


@pytest.mark.parametrize("correct,accuracy", [("y", 1.0), ("n", 0.0)])
def test_multiple_choice_accuracy_follows_the_option_the_model_prefers(
    biased_llama: Callable[[dict[str, float]], Loaded],
    write_task: Callable[..., Path],
    correct: str,
    accuracy: float,
) -> None:
    model = biased_llama({"y": 20.0})
    result = multiple_choice(model, yes_no_task(write_task, correct), batch_size=5)
    assert result.value == accuracy
    assert result.scores == [accuracy] * len(INPUTS)
    assert result.sample_ids == [str(i) for i in range(len(INPUTS))]
    assert (result.metric, result.higher_is_better, result.score_name, result.score_unit) == (
        "accuracy",
        True,
        "item_correct",
        "0/1",
    )
    assert result.details["chance_accuracy"] == 0.5
    assert (result.details["n_items"], result.details["n_items_total"]) == (6, 6)


def test_length_normalisation_changes_the_choice(
    biased_llama: Callable[[dict[str, float]], Loaded], write_task: Callable[..., Path]
) -> None:
    # 'b' gets ~e^5 times the probability of other tokens: log p(b) ~ -1.5, log p(c) ~ -6.5 at every step.
    # Summed, six b's (~ -9) lose to one c; per token, they win.
    model = biased_llama({"b": 5.0})
    path = write_task([{"input": text, "target_scores": {"c": 0, "bbbbbb": 1}} for text in INPUTS])
    task = load_task(path)
    scores = option_logprobs(model, task, list(range(len(INPUTS))), length_normalize=False, batch_size=4)
    assert all(c > b for c, b in scores), f"sums should prefer 'c': {scores}"
    assert multiple_choice(model, task).value == 0.0
    normalised = multiple_choice(model, task, length_normalize=True)
    assert normalised.value == 1.0 and normalised.details["length_normalize"] is True


def test_option_logprobs_are_the_same_batched_and_padded_as_alone(tiny_llama: Loaded) -> None:
    task = load_task("sports_understanding")
    indices = [0, 3, 500, 999]
    alone = option_logprobs(tiny_llama, task, indices, length_normalize=False, batch_size=1)
    padded = option_logprobs(tiny_llama, task, indices, length_normalize=False, batch_size=8)
    torch.testing.assert_close(torch.tensor(padded), torch.tensor(alone), msg="right padding changed scores")
    # By hand for item 0, option 1: BOS + "...Plausible/implausible?" then " implausible".
    item = task.items[0]
    context = [1] + tiny_llama.tokenizer(task.prompt(item).rstrip(), add_special_tokens=False)["input_ids"]
    option = tiny_llama.tokenizer(" " + item.options[1], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + option])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_llama.model(ids).logits[0, :-1].float(), dim=-1)
    expected = sum(logp[len(context) - 1 + k, tok].item() for k, tok in enumerate(option))
    assert alone[0][1] == pytest.approx(expected, rel=1e-5)


def test_multiple_choice_subset_is_seeded_recorded_and_in_file_order(tiny_llama: Loaded) -> None:
    task = load_task("sports_understanding")
    first = multiple_choice(tiny_llama, task, max_items=12, seed=0, batch_size=16)
    again = multiple_choice(tiny_llama, task, max_items=12, seed=0, batch_size=3)
    other = choose_items(1000, 12, seed=1)
    assert first.sample_ids == again.sample_ids and first.scores == again.scores
    ids = [int(i) for i in first.sample_ids]
    assert ids == sorted(ids) and len(set(ids)) == 12 and ids != other
    assert ids == choose_items(1000, 12, seed=0)
    d = first.details
    assert (d["n_items"], d["n_items_total"], d["subset_seed"]) == (12, 1000, 0)
    assert d["task"] == "sports_understanding" and d["task_path"].endswith("sports_understanding/task.json")
    assert choose_items(51, None, 0) == choose_items(51, 60, 0) == list(range(51))


def test_multiple_choice_runs_every_item_of_cause_and_effect(tiny_llama: Loaded) -> None:
    result = multiple_choice(tiny_llama, "cause_and_effect/one_sentence", max_items=None)
    assert len(result.scores) == 51 and set(result.scores) <= {0.0, 1.0}
    assert result.value == sum(result.scores) / 51
    assert result.details["subset"] == "all items"


def test_packaged_tasks_load_with_their_prefixes() -> None:
    assert TASKS == ("cause_and_effect/one_sentence", "sports_understanding")
    sports = load_task("sports_understanding")
    assert len(sports.items) == 1000 and sports.items[0].options == ("plausible", "implausible")
    assert sports.items[0].correct == frozenset({0})
    assert sports.prompt(sports.items[0]) == (
        "Determine whether the following statement or statements are plausible or implausible:"
        "\nStatement: Jamal Murray was perfect from the line\nPlausible/implausible? "
    )
    assert sports.continuation("plausible") == "plausible"
    cause = load_task("cause_and_effect/one_sentence")
    assert len(cause.items) == 51 and all(len(it.options) == 2 for it in cause.items)


def test_task_without_prefixes_appends_options_after_a_space(write_task: Callable[..., Path]) -> None:
    task = load_task(write_task([{"input": "2+2=", "target_scores": {"4": 1, "5": 0}}], task_prefix="Sums:"))
    assert task.prompt(task.items[0]) == "Sums:2+2="
    assert task.continuation("4") == " 4"
    tied = load_task(write_task([{"input": "x", "target_scores": {"a": 1, "b": 1, "c": 0.5}}], name="t.json"))
    assert tied.items[0].correct == {0, 1}, "every option with the top score counts as correct"


def test_split_encode_moves_trailing_space_into_the_option(tiny_llama: Loaded) -> None:
    tok = tiny_llama.tokenizer
    prompt_ids, option_ids = split_encode(tok, "A: ", "yes")
    assert prompt_ids == tok("A:", add_special_tokens=False)["input_ids"]
    assert option_ids == tok(" yes", add_special_tokens=False)["input_ids"]


def test_split_encode_tokenises_separately_when_the_boundary_merges() -> None:
    # "a" + "b" merge into "ab" when tokenised together, so the prompt's tokens are no prefix.
    tok = MergingTokenizer({"x": 10, "a": 11, "b": 12, "ab": 13})
    assert tok("xab")["input_ids"] == [10, 13]
    assert split_encode(tok, "xa", "b") == ([10, 11], [12])
    assert split_encode(tok, "x", "ab") == ([10], [13])


class MergingTokenizer:
    """Greedy longest-match tokenizer over a tiny vocabulary."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        ids, i = [], 0
        while i < len(text):
            piece = max((p for p in self.vocab if text.startswith(p, i)), key=len)
            ids.append(self.vocab[piece])
            i += len(piece)
        return {"input_ids": ids}


GOOD = {"input": "q", "target_scores": {"a": 1, "b": 0}}


@pytest.mark.parametrize(
    "content,words",
    [
        ("{not json", ["not valid JSON", "line 1"]),
        (json.dumps({"name": "x"}), ["no non-empty 'examples' list"]),
        (json.dumps({"examples": []}), ["no non-empty 'examples' list"]),
        (json.dumps({"examples": [GOOD, {"target_scores": {"a": 1, "b": 0}}]}), ["example 1", "no 'input'"]),
        (json.dumps({"examples": [{"input": "q", "target": "a"}]}), ["example 0", "no 'target_scores'"]),
        (
            json.dumps({"examples": [{"input": "q", "target_scores": {"a": 1}}]}),
            ["1 option(s)", "at least two"],
        ),
        (
            json.dumps({"examples": [{"input": "q", "target_scores": {"a": 0, "b": 0}}]}),
            ["no correct option"],
        ),
        (json.dumps({"examples": [{"input": "q", "target_scores": {"a": "1", "b": 0}}]}), ["finite numbers"]),
        (json.dumps({"examples": [GOOD], "task_prefix": 3}), ["'task_prefix' is int"]),
    ],
)
def test_load_task_rejects_malformed_files(tmp_path: Path, content: str, words: list[str]) -> None:
    path = tmp_path / "task.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalError) as info:
        load_task(path)
    for word in [str(path), *words]:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


def test_load_task_names_available_tasks_for_an_unknown_name() -> None:
    with pytest.raises(EvalError) as info:
        load_task("sports_understandin")
    message = str(info.value)
    assert (
        "unknown task 'sports_understandin'" in message and "did you mean 'sports_understanding'" in message
    )
    assert "available: cause_and_effect/one_sentence, sports_understanding" in message


def test_load_task_reports_a_missing_file_and_reads_a_folder(
    tmp_path: Path, write_task: Callable[..., Path]
) -> None:
    with pytest.raises(EvalError, match="no such task file"):
        load_task(tmp_path / "nothing" / "task.json")
    write_task([GOOD])
    assert len(load_task(tmp_path).items) == 1


@pytest.mark.parametrize(
    "kwargs,words",
    [(dict(max_items=0), ["max_items=0", "positive"]), (dict(batch_size=-2), ["batch_size=-2"])],
)
def test_multiple_choice_rejects_bad_sizes(
    tiny_llama: Loaded, kwargs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(EvalError) as info:
        multiple_choice(tiny_llama, "sports_understanding", **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_multiple_choice_refuses_a_model_without_tokenizer(tiny_llama: Loaded) -> None:
    with pytest.raises(EvalError, match="needs a tokenizer"):
        multiple_choice(Loaded(tiny_llama.model, None, tiny_llama.info), "sports_understanding")
