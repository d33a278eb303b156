"""A save_pretrained folder loads back to the same model, with or without its tokenizer files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from unbottle.core.errors import ConfigError
from unbottle.models import load, resolve
from unbottle.sources import Loaded
from unbottle.sources.hf_folder import HFFolderSource


def test_load_hf_folder_matches_saved_logits(hf_folder: Path, tiny_llama: Loaded, logits_of) -> None:
    loaded = load(str(hf_folder))
    torch.testing.assert_close(
        logits_of(loaded.model),
        logits_of(tiny_llama.model),
        rtol=0,
        atol=0,
        msg="logits of the reloaded folder differ from the model that was saved",
    )
    info = loaded.info
    assert (info.source_kind, info.task, info.architecture, info.dtype) == (
        "hf-folder",
        "causal-lm",
        "llama",
        "float32",
    )
    assert info.n_parameters == tiny_llama.info.n_parameters == 139_584
    assert info.path == str(hf_folder) and info.spec == str(hf_folder)
    assert info.notes == []
    assert info.load_s > 0
    assert not loaded.model.training


def test_load_hf_folder_brings_its_tokenizer(hf_folder: Path, tiny_llama: Loaded) -> None:
    tok = load(str(hf_folder)).tokenizer
    assert tok is not None
    text = "héllo 🙂"
    assert tok(text)["input_ids"] == tiny_llama.tokenizer(text)["input_ids"]
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_load_hf_folder_without_tokenizer_gives_none_and_a_note(
    hf_folder: Path, tmp_path: Path, tiny_llama: Loaded, logits_of
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hf_folder / name, bare / name)
    loaded = load(str(bare))
    assert loaded.tokenizer is None
    assert len(loaded.info.notes) == 1
    assert loaded.info.notes[0].startswith(f"no usable tokenizer in {bare}")
    assert "random token ids" in loaded.info.notes[0]
    torch.testing.assert_close(logits_of(loaded.model), logits_of(tiny_llama.model), rtol=0, atol=0)


def test_load_hf_folder_casts_to_bfloat16(hf_folder: Path, tiny_llama: Loaded, logits_of) -> None:
    loaded = load(str(hf_folder), dtype="bfloat16")
    assert loaded.info.dtype == "bfloat16"
    torch.testing.assert_close(
        logits_of(loaded.model).float(),
        logits_of(tiny_llama.model),
        rtol=0.05,
        atol=0.05,
        msg="bfloat16 logits stray further from float32 than bf16 rounding explains",
    )


def test_load_hf_folder_rejects_dtype_int3_as_config_error(hf_folder: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"dtype 'int3' is not supported; allowed: float32, bfloat16, float16"
    ):
        load(str(hf_folder), dtype="int3")


def test_load_hf_folder_of_tiny_bert_is_masked_lm(tmp_path: Path, logits_of) -> None:
    bert = load("tiny-bert")
    bert.model.save_pretrained(tmp_path / "bert")
    loaded = load(str(tmp_path / "bert"))
    assert (loaded.info.task, loaded.info.architecture) == ("masked-lm", "bert")
    torch.testing.assert_close(logits_of(loaded.model), logits_of(bert.model), rtol=0, atol=0)


def test_resolve_folder_gives_hf_folder_source_without_loading(hf_folder: Path) -> None:
    source = resolve(str(hf_folder))
    assert isinstance(source, HFFolderSource)
    assert source.describe() == f"hf-folder: {hf_folder}"
    assert [w.name for w in source.weights] == ["model.safetensors"] and source.pickles == []
