"""The winner's accuracy is verified out of sample: screening and finals read the text's first part,
the verification the next part, calibration another novel."""

from __future__ import annotations

import pytest

from unbottle.core.errors import EvalError
from unbottle.data import CALIBRATION_TEXT, EVAL_TEXT
from unbottle.evaluation.multiple_choice import choose_items
from unbottle.evaluation.perplexity import perplexity
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.trial import baseline as measure_baseline


def _text_tokens(details: dict) -> set[int]:
    """Positions in the text (not the stream) of the tokens a perplexity run scored."""
    start, prefix = details["start_token"], int(details.get("bos_prepended", False))
    return set(range(start, start + details["eval_tokens"] - prefix))


def test_selection_and_held_out_parts_of_the_text_are_disjoint():
    cfg = OptimizeConfig(model="tiny-llama", threads=1, screen_tokens=256, eval_tokens=512)
    base = measure_baseline({"config": cfg.to_dict()})
    parts = {
        stage: _text_tokens(base["evals"][stage][0]["details"]) for stage in ("screen", "full", "held_out")
    }
    assert parts["screen"] <= parts["full"] and len(parts["held_out"]) >= 500
    assert not parts["full"] & parts["held_out"]
    assert {e["details"]["corpus"] for s in base["evals"].values() for e in s} == {
        base["evals"]["full"][0]["details"]["corpus"]
    } and EVAL_TEXT in base["evals"]["full"][0]["details"]["corpus"]
    assert CALIBRATION_TEXT != EVAL_TEXT  # calibration reads another novel
    assert base["evals"]["held_out"][0]["value"] != base["evals"]["full"][0]["value"]


def test_a_text_too_short_for_a_held_out_part_says_how_long_it_must_be(tiny_llama):
    text = "A short text that will not hold two parts. " * 8
    with pytest.raises(
        EvalError, match=r"held-out part starts at token 256 and needs .* at least \d+ tokens"
    ):
        perplexity(
            tiny_llama, text, source="my text", eval_tokens=256, window=128, stride=128, start_token=256
        )


def test_a_tasks_items_split_into_disjoint_selection_and_held_out_halves():
    cfg = OptimizeConfig(
        model="tiny-llama",
        threads=1,
        screen_tokens=256,
        eval_tokens=512,
        task="sports_understanding",
        max_items=30,
    )
    base = measure_baseline({"config": cfg.to_dict()})
    items = {stage: set(base["evals"][stage][1]["sample_ids"]) for stage in ("screen", "full", "held_out")}
    assert base["evals"]["held_out"][1]["details"]["item_part"] == "held_out"
    assert items["screen"] <= items["full"] and items["held_out"]
    assert not items["full"] & items["held_out"]


def test_a_task_of_one_item_cannot_be_split():
    with pytest.raises(EvalError, match="can't be split"):
        choose_items(1, None, 0, "held_out")
