"""Candidates: parsing, the first round with skip reasons, compositions and per-layer fallbacks."""

from __future__ import annotations

import pytest

from unbottle.core.errors import ConfigError
from unbottle.optimizer import candidates as cm
from unbottle.optimizer.candidates import (
    Candidate,
    compositions,
    fallbacks,
    first_round,
    host_order,
    parse_candidate,
)
from unbottle.profiling.peaks import Peaks

MIB = 2**20


def _peaks(bandwidth: float, cache: float | None = None, **flops: float) -> Peaks:
    """Made-up peaks (GB/s, GFLOP/s): the order must follow them, not this host's."""
    return Peaks(
        threads=1,
        bandwidth_gbps=bandwidth,
        matmul_gflops={"float32": 100.0, **flops},
        cache_bandwidth_gbps=cache,
        llc_bytes=32 * MIB if cache else None,
    )


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


def test_host_order_keeps_the_built_in_order_and_says_so_without_stored_peaks():
    order, why = host_order(None, "decode")
    assert order is None and "no stored machine peaks" in why and "built-in" in why
    assert host_order(_peaks(20.0), "size") == (None, "")  # size has no phase to time


def test_host_order_puts_weight_formats_first_by_expected_gain_when_decode_is_memory_bound():
    order, why = host_order(_peaks(20.0, bfloat16=200.0, int8=400.0), "decode")
    # 0.5 FLOP/byte below the ridge at 100 / 20 = 5: the bytes ratios rule, int4 (6.4x) before int8 (3.6x);
    # ties keep the built-in order (the GenAI builds ahead of the plain ONNX export)
    assert order == [
        "genai:weights=gguf",
        "wo-int4:group_size=32",
        "genai:precision=int8",
        "onnx:quantize=int8-block",
        "wo-int8",
    ]
    assert "memory-bound" in why and "≤6.4x" in why and "≤3.6x" in why
    chosen, _, primary = first_round((), "decode", preferred=order)
    keys = [c.key for c in chosen]
    assert keys[: len(order)] == order
    built_in, _, built_in_primary = first_round((), "decode")
    assert set(keys[:primary]) == {c.key for c in built_in[:built_in_primary]}  # same primary tier


def test_host_order_ranks_by_the_compute_a_cache_resident_format_needs():
    # fp32 weights (80 MB) from DRAM, int8 ones (22.5 MB) from the 32 MiB cache at 200 GB/s: wo-int8's
    # fp32 multiplies (100 GFLOP/s) now cap it, ONNX Runtime's int8 ones (400 GOP/s) do not.
    peaks = _peaks(20.0, cache=200.0, bfloat16=200.0, int8=400.0)
    order, why = host_order(peaks, "decode", weight_bytes=80e6)
    assert order.index("onnx:quantize=int8-block") < order.index("wo-int8")
    assert "≤10.0x" in why  # wo-int8: (4 B / 20 GB/s) / (2 FLOP / 100 GFLOP/s), not the 3.6x bytes ratio


def test_host_order_puts_faster_matmul_dtypes_first_when_the_phase_is_compute_bound():
    fast_memory = _peaks(400.0, bfloat16=400.0, int8=150.0)  # ridge 0.25 < 0.5: decode compute-bound
    order, why = host_order(fast_memory, "decode")
    assert order == ["precision", "static-int8"] and "compute-bound" in why
    order, _ = host_order(_peaks(20.0, bfloat16=300.0, int8=500.0), "prefill")
    assert order == ["static-int8", "precision"]  # 5x before 3x
    order, why = host_order(_peaks(20.0, bfloat16=90.0), "ttft")
    assert order is None and "no faster matmul dtype" in why


def test_a_gguf_model_tries_its_own_blocks_and_a_float_model_computes_them():
    from_file, skipped_file, _ = first_round((), "decode", gguf=True)
    assert from_file[0].key == "genai:weights=gguf"
    assert "carries its own blocks over" in skipped_file["genai:weights=blocks"]
    floats, skipped_float, _ = first_round((), "decode", gguf=False)
    assert floats[0].key == "genai:weights=blocks"
    assert "not loaded from a .gguf file" in skipped_float["genai:weights=gguf"]
    asked, skipped, _ = first_round(("genai:weights=blocks",), "decode", gguf=True)
    assert [c.key for c in asked] == ["genai:weights=blocks"] and not skipped  # named by the user: tried


def test_only_a_blocks_build_gets_per_layer_fallbacks_among_genai_candidates():
    from unbottle.optimizer.candidates import fallbacks, parse_candidate

    sens = {"model.layers.0.mlp.down_proj": 0.2, "model.layers.1.self_attn.q_proj": 0.01}
    blocks = fallbacks(parse_candidate("genai:weights=blocks"), sens)
    assert blocks and blocks[0].configs[0].exclude == ("model.layers.0.mlp.down_proj",)  # at 8 bits
    assert all(c.origin == "fallback" for c in blocks)
    assert fallbacks(parse_candidate("genai:weights=gguf"), sens) == []
    assert fallbacks(parse_candidate("genai:precision=int4"), sens) == []
