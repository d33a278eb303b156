"""Every spec that names nothing loadable fails with one ModelLoadError/ConfigError: what, and how to fix."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from unbottle.core.errors import ConfigError, ModelLoadError
from unbottle.models import load
from unbottle.sources import Loaded


def _copy_folder(src: Path, dst: Path, names: tuple[str, ...] = ("config.json", "model.safetensors")) -> Path:
    dst.mkdir()
    for name in names:
        shutil.copy(src / name, dst / name)
    return dst


def _write_config(folder: Path, **config: object) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("spec", ["nope/model", "missing.gguf", "./gone", "~/surely-not-here-xyz"])
def test_load_nonexistent_path_says_no_such_file(spec: str, private_dirs: Path, monkeypatch) -> None:
    monkeypatch.chdir(private_dirs)
    with pytest.raises(ModelLoadError) as err:
        load(spec)
    message = str(err.value)
    assert message.startswith(f"no such file or folder: {spec!r}")
    assert "give a model folder, a .gguf file, or a known name (" in message and "tiny-llama" in message


def test_load_unknown_name_suggests_close_match_and_lists_available() -> None:
    with pytest.raises(ModelLoadError) as err:
        load("smolm2-135m")
    message = str(err.value)
    assert message.startswith("unknown model 'smolm2-135m'; did you mean 'smollm2-135m'?")
    listed = message.split("available: ", 1)[1].split(";", 1)[0].split(", ")
    assert {"smollm2-135m", "gemma3-270m", "tiny-bert", "tiny-llama"} <= set(listed) and listed == sorted(
        listed
    )
    assert message.endswith("or give a path to a model folder or a .gguf file")


def test_load_unrelated_name_lists_available_without_guess() -> None:
    with pytest.raises(ModelLoadError, match=r"^unknown model 'zzzz'; available: ") as err:
        load("zzzz")
    assert "did you mean" not in str(err.value)


def test_load_rejects_dtype_int3_as_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"dtype 'int3' is not supported; allowed: float32, bfloat16, float16"
    ):
        load("tiny-llama", dtype="int3")


def test_load_folder_without_config_json_says_it_needs_one(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy_folder(hf_folder, tmp_path / "noconfig", names=("model.safetensors",))
    with pytest.raises(ModelLoadError) as err:
        load(str(folder))
    message = str(err.value)
    assert message.startswith(f"cannot read {folder / 'config.json'}: ")
    assert "No such file" in message and "needs a valid config.json" in message


def test_load_folder_with_invalid_config_json_says_cannot_read(tmp_path: Path) -> None:
    folder = tmp_path / "badjson"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"cannot read .*config.json: .*needs a valid config.json"):
        load(str(folder))


def test_load_folder_with_config_lacking_model_type_says_save_pretrained(tmp_path: Path) -> None:
    folder = _write_config(tmp_path / "notype", hidden_size=64)
    with pytest.raises(
        ModelLoadError, match=r"config.json has no 'model_type'; give a folder saved by .*save_pretrained"
    ):
        load(str(folder))


def test_load_folder_with_config_but_no_weights_says_no_weights(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy_folder(hf_folder, tmp_path / "noweights", names=("config.json",))
    with pytest.raises(ModelLoadError) as err:
        load(str(folder))
    message = str(err.value)
    assert message.startswith(f"{folder} has no weights: expected *.safetensors files beside config.json")
    assert "save_pretrained(..., safe_serialization=True)" in message


@pytest.mark.parametrize("model_type", ["resnet", "frobnicator"])
def test_load_folder_of_unsupported_architecture_names_it(tmp_path: Path, model_type: str) -> None:
    folder = _write_config(tmp_path / model_type, model_type=model_type)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError) as err:
        load(str(folder))
    message = str(err.value)
    assert message.startswith(f"unsupported architecture {model_type!r} in {folder / 'config.json'}")
    assert "causal-LM and masked-LM" in message and "llama" in message


def test_load_truncated_safetensors_says_truncated(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy_folder(hf_folder, tmp_path / "cut")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as err:
        load(str(folder))
    message = str(err.value)
    assert message.startswith(f"{weights} is truncated: its header describes {len(data)} bytes")
    assert f"the file has {len(data) // 2}" in message and "re-download or re-save" in message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (struct.pack("<Q", 12) + b"\xff garbage \xfe" + bytes(64), "has a corrupt safetensors header"),
        (struct.pack("<Q", 2) + b"[]" + bytes(64), "has a corrupt safetensors header"),
        (struct.pack("<Q", 10**12) + bytes(64), "is truncated or not a safetensors file: header claims"),
        (b"\x01\x02", "is not a safetensors file (2 bytes, no header)"),
    ],
    ids=["garbage-json", "json-not-object", "huge-header-length", "two-bytes"],
)
def test_load_safetensors_with_garbage_header_says_corrupt(
    hf_folder: Path, tmp_path: Path, payload: bytes, message: str
) -> None:
    folder = _copy_folder(hf_folder, tmp_path / "garbage", names=("config.json",))
    weights = folder / "model.safetensors"
    weights.write_bytes(payload)
    with pytest.raises(ModelLoadError) as err:
        load(str(folder))
    assert str(err.value).startswith(f"{weights} "), str(err.value)
    assert message in str(err.value)


def _pickle_folder(tiny_llama: Loaded, folder: Path, hf_folder: Path, drop: str | None = None) -> Path:
    _copy_folder(hf_folder, folder, names=("config.json",))
    state = {k: v for k, v in tiny_llama.model.state_dict().items() if k != drop}
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_load_pickle_only_folder_is_refused_without_allow_pickle(
    tiny_llama: Loaded, hf_folder: Path, tmp_path: Path
) -> None:
    folder = _pickle_folder(tiny_llama, tmp_path / "pickled", hf_folder)
    with pytest.raises(ModelLoadError) as err:
        load(str(folder))
    message = str(err.value)
    assert message.startswith("pytorch_model.bin is a pickle checkpoint, which can run arbitrary code")
    assert "pass allow_pickle" in message and "weights_only=True" in message


def test_load_pickle_only_folder_with_allow_pickle_matches_original_logits(
    tiny_llama: Loaded, hf_folder: Path, tmp_path: Path, logits_of
) -> None:
    folder = _pickle_folder(tiny_llama, tmp_path / "pickled", hf_folder)
    loaded = load(str(folder), allow_pickle=True)
    torch.testing.assert_close(
        logits_of(loaded.model),
        logits_of(tiny_llama.model),
        rtol=0,
        atol=0,
        msg="logits of the pickle-loaded model differ from the model that was saved",
    )
    assert loaded.info.notes[0] == "loaded pickle checkpoint(s) with weights_only=True: pytorch_model.bin"
    assert (loaded.info.source_kind, loaded.info.n_parameters) == ("hf-folder", 139_584)
    assert not loaded.model.training


def test_load_pickle_missing_a_tensor_says_it_does_not_match_config(
    tiny_llama: Loaded, hf_folder: Path, tmp_path: Path
) -> None:
    drop = "model.layers.1.mlp.up_proj.weight"
    folder = _pickle_folder(tiny_llama, tmp_path / "partial", hf_folder, drop=drop)
    with pytest.raises(ModelLoadError, match=r"checkpoint does not match config.json \(missing \['" + drop):
        load(str(folder), allow_pickle=True)


def test_load_pickle_with_code_is_refused_by_weights_only(hf_folder: Path, tmp_path: Path) -> None:
    folder = _copy_folder(hf_folder, tmp_path / "evil", names=("config.json",))
    torch.save({"payload": Path("x")}, folder / "pytorch_model.bin")  # a non-tensor object in the pickle
    with pytest.raises(ModelLoadError, match=r"cannot load .*pytorch_model.bin with weights_only=True"):
        load(str(folder), allow_pickle=True)


def test_load_single_safetensors_file_asks_for_its_folder(hf_folder: Path) -> None:
    spec = str(hf_folder / "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load(spec)
    assert str(err.value) == (
        f"{spec!r} is a single safetensors file; give the folder that holds it with its config.json"
    )


def test_load_single_pickle_file_is_refused_with_allow_pickle_hint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError) as err:
        load(str(path))
    message = str(err.value)
    assert message.startswith("weights.pt is a pickle checkpoint")
    assert message.endswith(
        "allow_pickle to load it with torch.load(weights_only=True) (on the folder that holds it)"
    )


@pytest.mark.parametrize(("name", "kind"), [("model.onnx", ".onnx"), ("weights", "no suffix")])
def test_load_file_of_unknown_type_lists_allowed_kinds(tmp_path: Path, name: str, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError) as err:
        load(str(path))
    allowed = "allowed: a .gguf file or a Hugging Face model folder"
    assert str(err.value) == f"{str(path)!r} is a file of unknown kind ({kind}); {allowed}"


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda text: text[:40],
            r"unbottle-recipe.json is not valid JSON \(.* at line \d+, column \d+\); re-create",
        ),
        (lambda text: text.replace('"precision"', '"precisionx"'), r"pass 1 \(precisionx\): unknown pass"),
        (lambda text: text.replace("PrecisionConfig", "FooConfig"), r"pass 1 \(precision\): config of type"),
        (lambda text: text.replace('"baked"', '"bakd"'), r"unknown or missing fields \['bakd'\]"),
    ],
)
def test_a_damaged_recipe_names_the_file_the_pass_and_the_fix(
    tiny_llama: Loaded, tmp_path: Path, edit, words
):
    from unbottle.passes import parse_pass
    from unbottle.passes.recipe import RECIPE_FILE, apply_and_save

    apply_and_save(tiny_llama, [parse_pass("precision")], "tiny-llama", tmp_path / "saved")
    recipe = tmp_path / "saved" / RECIPE_FILE
    recipe.write_text(edit(recipe.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=words) as err:
        load(str(tmp_path / "saved"))
    assert "(or restore the file)" in str(err.value)
