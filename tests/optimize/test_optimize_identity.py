"""A search resumes only what was measured on the same model bytes, libraries, CPU and threads; when
any of them changed it measures afresh and says what changed."""

from __future__ import annotations

from pathlib import Path

from unbottle.optimizer import identity
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.search import Search
from unbottle.sources.tiny import TinySource
from unbottle.store import Store


def _search(model: str, lines: list[str]) -> Search:
    cfg = OptimizeConfig(model=model, candidates=("wo-int8",), time_budget_s=600, threads=2)
    return Search(cfg, Store(), Store().root / "out", log=lines.append)


def test_a_library_upgrade_starts_the_trials_afresh_and_says_why(fake_workers, monkeypatch):
    first = _search("tiny-llama", [])
    first.run()
    again: list[str] = []
    resumed = _search("tiny-llama", again)
    resumed.run()
    assert resumed.key == first.key and any("baseline: recorded earlier" in x for x in again)
    assert fake_workers.functions().count("baseline") == 1

    real = identity.library_versions
    monkeypatch.setattr(identity, "library_versions", lambda: {**real(), "onnxruntime": "99.0"})
    upgraded: list[str] = []
    search = _search("tiny-llama", upgraded)
    doc = search.run()
    assert search.key != first.key and search.key.split("-")[0] == first.key.split("-")[0]
    assert fake_workers.functions().count("baseline") == 2  # measured again, not reused
    assert doc["restarted_because"] == [f"onnxruntime {real()['onnxruntime']} → 99.0"]
    assert any("measured under other circumstances (onnxruntime" in x for x in upgraded)


def test_new_model_bytes_in_the_same_folder_start_afresh(fake_workers, tmp_path):
    folder = _tiny_folder(tmp_path / "model", seed=0)
    _search(str(folder), []).run()
    _tiny_folder(folder, seed=1)  # retrained in place: same path, other weights
    lines: list[str] = []
    doc = _search(str(folder), lines).run()
    assert doc["restarted_because"] == ["the model's bytes"]
    assert fake_workers.functions().count("baseline") == 2


def test_what_changed_names_each_difference():
    before = {"model_bytes": "a", "torch": "2.13.0", "threads": 2, "cpu": "Xeon"}
    now = {"model_bytes": "b", "torch": "2.13.0", "threads": 1, "cpu": "Xeon"}
    assert identity.what_changed(before, now) == ["the model's bytes", "threads 2 → 1"]
    assert identity.what_changed(before, before) == []


def _tiny_folder(path: Path, seed: int) -> Path:
    loaded = TinySource("tiny-llama", seed=seed).load()
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return path
