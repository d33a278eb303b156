"""A GGUF file converts once into a safetensors cache keyed by its hash, and loads back the same model.

The fixture writes tiny-llama as an F32 GGUF the way llama.cpp's convert_hf_to_gguf.py does: llama.cpp
tensor names, llama architecture metadata, attn_q/attn_k rows permuted for its rotary layout (which
transformers' LlamaTensorProcessor._reverse_permute_weights undoes), and a byte-level "gpt2" tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from gguf_files import write_llama_gguf
from unbottle.core.errors import ModelLoadError
from unbottle.models import load, resolve
from unbottle.sources import Loaded
from unbottle.sources.gguf_file import GGUFSource


@pytest.fixture(scope="module")
def gguf_path(tiny_llama: Loaded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tiny_llama.model, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _cache_dir(gguf_file: Path, cache_root: Path) -> Path:
    digest = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    return cache_root / "gguf" / f"{gguf_file.stem}-{digest[:16]}"


def test_load_gguf_matches_tiny_llama_weights_and_logits(
    gguf_path: Path, tiny_llama: Loaded, logits_of
) -> None:
    loaded = load(str(gguf_path))
    original, converted = tiny_llama.model.state_dict(), loaded.model.state_dict()
    assert sorted(converted) == sorted(original)
    differing = [k for k in original if not torch.equal(original[k], converted[k])]
    assert differing == [], f"GGUF round trip changed (permutation not undone?): {differing}"
    # rms_norm_eps is stored as float32 in GGUF (1e-6 -> 9.99999997e-07): logits agree to rounding only.
    torch.testing.assert_close(
        logits_of(loaded.model),
        logits_of(tiny_llama.model),
        rtol=1e-5,
        atol=1e-5,
        msg="logits of the GGUF-loaded tiny-llama differ from the original",
    )
    info = loaded.info
    assert (info.source_kind, info.task, info.architecture, info.dtype) == (
        "gguf",
        "causal-lm",
        "llama",
        "float32",
    )
    assert info.n_parameters == 139_584 and info.path == str(gguf_path)
    config = loaded.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_key_value_heads, config.vocab_size) == (
        2,
        64,
        2,
        512,
    )
    assert config.tie_word_embeddings is False


def test_load_gguf_rebuilds_tokenizer_from_metadata(gguf_path: Path) -> None:
    tok = load(str(gguf_path)).tokenizer
    assert tok is not None
    assert tok("the", add_special_tokens=False)["input_ids"] == [261], (
        "the merges 'h e', 't he' were not applied"
    )
    assert tok.convert_ids_to_tokens([1, 2]) == ["<s>", "</s>"]
    text = "héllo wörld 🙂"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_load_gguf_caches_by_sha256_then_reloads_from_cache_faster(
    gguf_path: Path, private_dirs: Path, logits_of
) -> None:
    cache = private_dirs / "cache"
    target = _cache_dir(gguf_path, cache)
    assert not target.exists()

    first = load(str(gguf_path))
    written = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "unbottle-cache.json"} <= written
    assert json.loads((target / "unbottle-cache.json").read_text()) == {"source": str(gguf_path)}
    assert first.info.notes[0] == f"converted GGUF once into safetensors cache {target}"
    assert [p.name for p in target.parent.iterdir()] == [target.name], "conversion left a temporary folder"

    second = load(str(gguf_path))
    assert second.info.notes[0] == f"loaded from safetensors cache {target}"
    assert second.info.source_kind == "gguf" and second.info.path == str(gguf_path)
    assert second.info.load_s < first.info.load_s, (
        f"cache hit took {second.info.load_s:.3f} s, the conversion {first.info.load_s:.3f} s"
    )
    torch.testing.assert_close(logits_of(second.model), logits_of(first.model), rtol=0, atol=0)


def test_load_gguf_replaces_stale_cache_folder_without_marker(gguf_path: Path, private_dirs: Path) -> None:
    target = _cache_dir(gguf_path, private_dirs / "cache")
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half-written by a killed conversion")
    loaded = load(str(gguf_path))
    assert loaded.info.notes[0].startswith("converted GGUF once")
    assert (target / "unbottle-cache.json").is_file()
    assert (target / "model.safetensors").stat().st_size > 139_584 * 4


def test_resolve_gguf_gives_gguf_source_with_architecture(gguf_path: Path) -> None:
    source = resolve(str(gguf_path))
    assert isinstance(source, GGUFSource)
    assert source.architecture == "llama"


def test_load_gguf_rejects_truncated_file(gguf_path: Path, tmp_path: Path) -> None:
    data = gguf_path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="is a corrupt or truncated GGUF file") as err:
        load(str(cut))
    assert str(cut) in str(err.value) and "re-download the file" in str(err.value)


def test_load_gguf_rejects_file_cut_inside_header(gguf_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "head.gguf"
    cut.write_bytes(gguf_path.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="corrupt or truncated GGUF file") as err:
        load(str(cut))
    assert str(cut) in str(err.value)


def test_load_gguf_rejects_wrong_magic(gguf_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + gguf_path.read_bytes()[4:])
    with pytest.raises(
        ModelLoadError, match=r"is not a GGUF file \(magic b'GGML', expected b'GGUF'\)"
    ) as err:
        load(str(bad))
    assert str(bad) in str(err.value)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("frobnet", r"unsupported architecture 'frobnet'"),
        ("gptj", r"holds a 'gptj' model, which transformers cannot load from GGUF; supported: llama, "),
    ],
)
def test_load_gguf_rejects_architecture_transformers_cannot_load(
    tmp_path: Path, arch: str, message: str
) -> None:
    path = tmp_path / f"{arch}.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match=message) as err:
        load(str(path))
    assert str(path) in str(err.value)


def test_gguf_source_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is not a file; give a .gguf file or a model folder"):
        GGUFSource(tmp_path / "gone.gguf")


def test_load_gguf_copy_with_other_name_gets_own_cache_folder(gguf_path: Path, private_dirs: Path) -> None:
    copy = private_dirs / "renamed.gguf"
    shutil.copy(gguf_path, copy)
    load(str(copy))
    digest16 = hashlib.sha256(gguf_path.read_bytes()).hexdigest()[:16]
    assert [p.name for p in (private_dirs / "cache" / "gguf").iterdir()] == [f"renamed-{digest16}"]


def test_load_gguf_with_a_header_but_no_tensors_says_it_is_not_a_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gguf"
    writer = gguf.GGUFWriter(str(empty), "llama")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="empty.gguf holds no tensors .* so it is not a model"):
        load(str(empty))
