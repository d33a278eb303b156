"""Candidates: parsing, the first round with skip reasons, compositions and per-layer fallbacks."""

from __future__ import annotations

import pytest

from unbottle.core.errors import ConfigError
from unbottle.optimize import candidates as cm
from unbottle.optimize.candidates import Candidate, compositions, fallbacks, first_round, parse_candidate


def test_a_candidate_reads_like_the_command_line():
    cand = parse_candidate("prune-structured:amount=0.2 + wo-int8")
    assert [c.name for c in cand.configs] == ["prune-structured", "wo-int8"]
    assert cand.key == "prune-structured:amount=0.2 + wo-int8"
    assert parse_candidate(cand.key).key == cand.key


def test_impossible_orders_and_unknown_passes_are_refused():
    with pytest.raises(ConfigError, match="cannot follow"):
        parse_candidate("onnx + wo-int8")
    with pytest.raises(ConfigError, match="unknown pass"):
        parse_candidate("wo-int9")
    with pytest.raises(ConfigError, match="expected passes"):
        parse_candidate(" + ")


def test_first_round_skips_what_this_machine_cannot_run_with_the_reason(monkeypatch):
    monkeypatch.setattr(
        cm, "unavailable", lambda c: ["this CPU lacks AVX512_VNNI"] if c.name == "dynamic-int8" else []
    )
    chosen, skipped, primary = first_round(("wo-int8", "dynamic-int8", "wo-int8"), "decode")
    assert [c.key for c in chosen] == ["wo-int8"]  # duplicates dropped
    assert primary == 1  # candidates the user names are all primary
    assert "lacks AVX512_VNNI" in skipped["dynamic-int8"]


def test_default_first_round_puts_fewer_weight_bytes_first():
    chosen, _, primary = first_round((), "decode")
    keys = [c.key for c in chosen]
    assert keys.index("wo-int8") < keys.index("precision") < keys.index("compile")
    assert "onnx:quantize=int8-block" in keys[:primary] and "compile" not in keys[:primary]
    size_keys = [c.key for c in first_round((), "size")[0]]
    assert size_keys.index("wo-int4:group_size=32") < size_keys.index("wo-int8")


def test_compositions_take_one_pass_per_family_and_a_valid_order():
    good = [
        (parse_candidate("wo-int8"), 1.9),
        (parse_candidate("wo-int4:group_size=32"), 1.7),
        (parse_candidate("compile"), 1.1),
        (parse_candidate("prune-structured"), 1.2),
    ]
    keys = [c.key for c in compositions(good, limit=10)]
    assert "wo-int8 + compile" in keys
    assert "prune-structured + wo-int8" in keys  # reordered: torch passes before compile/export
    assert not any("wo-int8" in k and "wo-int4" in k for k in keys)  # same family
    assert keys[0] == "prune-structured + wo-int8"  # the best expected gain first (1.9 x 1.2)


def test_fallbacks_keep_the_most_sensitive_layers_fewest_first():
    cand = parse_candidate("onnx:quantize=int8-block")
    scores = {f"model.layers.{i}.mlp.down_proj": float(i) for i in range(20)} | {"lm_head": 100.0}
    variants = fallbacks(cand, scores)
    excludes = [v.configs[-1].exclude for v in variants]
    assert excludes[0] == ("lm_head",)
    assert [len(e) for e in excludes] == [1, 3, 6]
    assert excludes[1] == ("lm_head", "model.layers.19.mlp.down_proj", "model.layers.18.mlp.down_proj")
    assert all(v.origin == "fallback" and v.parent == cand.key for v in variants)


def test_fallbacks_add_to_what_is_already_excluded():
    cand = parse_candidate("wo-int4")  # lm_head excluded by default
    variants = fallbacks(cand, {"lm_head": 9.0, "a": 5.0, "b": 1.0})
    assert variants[0].configs[0].exclude == ("lm_head", "a")


def test_no_fallback_without_an_exclude_field_or_scores():
    assert fallbacks(parse_candidate("compile"), {"x": 1.0}) == []
    assert fallbacks(parse_candidate("wo-int8"), {}) == []
    assert Candidate(()).key == "baseline"


def test_a_profile_moves_its_recommendations_to_the_front_of_the_built_in_order():
    chosen, _, primary = first_round((), "prefill", preferred=["precision", "static-int8", "not-a-default"])
    keys = [c.key for c in chosen]
    assert keys[:2] == ["precision", "static-int8"]
    assert "precision" in keys[:primary]
    user, _, _ = first_round(("wo-int8", "precision"), "prefill", preferred=["precision"])
    assert [c.key for c in user] == ["wo-int8", "precision"]  # the user's own list is kept as given
