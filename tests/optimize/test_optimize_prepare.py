"""The model caches are filled before the budget's clock starts, and only when something is missing."""

from __future__ import annotations

from unbottle.optimizer import prepare
from unbottle.optimizer.candidates import parse_candidate
from unbottle.optimizer.config import OptimizeConfig
from unbottle.optimizer.search import Search
from unbottle.store import Store


def test_onnx_exports_lists_one_float_export_per_setting_of_the_candidates_that_start_with_onnx():
    cands = [
        parse_candidate(t)
        for t in ("onnx:quantize=int8-block", "onnx", "onnx:attention=sdpa", "wo-int8", "prune + onnx")
    ]
    assert prepare.onnx_exports(cands) == [
        {"opset": 20, "attention": "eager"},
        {"opset": 20, "attention": "sdpa"},
    ]


def test_genai_builds_lists_each_single_pass_genai_candidate_once_for_the_worker():
    texts = ("genai:weights=gguf", "genai:precision=int8", "genai:precision=int8,threads=1", "prune + genai")
    builds = prepare.genai_builds([parse_candidate(t) for t in texts])
    # threads only changes how a build runs, and a composition builds from changed weights: not prepared
    assert [(b["weights"], b["precision"], b["verify"], b["threads"]) for b in builds] == [
        ("gguf", "int4", False, None),
        ("quantize", "int8", False, None),
    ]


def test_builds_are_ready_only_while_their_folders_exist(tmp_path):
    wanted = prepare.genai_builds([parse_candidate("genai:precision=int8")])
    folder = tmp_path / "build"
    recorded = {"result": {"builds": [{"settings": wanted[0], "folder": str(folder)}]}}
    assert not prepare.exports_ready(recorded, wanted, "builds")
    folder.mkdir()
    (folder / "export.json").write_text("{}")
    assert prepare.exports_ready(recorded, wanted, "builds") and not prepare.exports_ready(recorded, wanted)


def test_gguf_pending_is_false_for_anything_but_a_gguf_file(tmp_path):
    assert not prepare.gguf_pending("tiny-llama")
    assert not prepare.gguf_pending(str(tmp_path / "missing.gguf"))


def test_exports_ready_needs_every_wanted_export_in_a_folder_that_still_exists(tmp_path):
    wanted = [{"opset": 20, "attention": "eager"}]
    folder = tmp_path / "export"
    recorded = {"result": {"exports": [{"settings": wanted[0], "folder": str(folder)}]}}
    assert prepare.exports_ready(None, []) and not prepare.exports_ready(None, wanted)
    assert not prepare.exports_ready(recorded, wanted)  # the folder is gone
    folder.mkdir()
    (folder / "export.json").write_text("{}")
    assert prepare.exports_ready(recorded, wanted)


def _search(lines: list[str]) -> Search:
    cfg = OptimizeConfig(
        model="tiny-llama", candidates=("onnx:quantize=int8-block", "wo-int8"), time_budget_s=600, threads=2
    )
    return Search(cfg, Store(), Store().root / "out", log=lines.append)


def test_the_onnx_export_is_prepared_outside_the_budget_once(fake_workers):
    lines: list[str] = []
    search = _search(lines)
    doc = search.run()
    assert fake_workers.functions()[:2] == ["fill_caches", "baseline"]
    assert fake_workers.called_at[0] < search.start < fake_workers.called_at[1]  # the clock starts after
    assert doc["preparation"]["worker"] and doc["preparation"]["onnx_exports"][0]["reused"] is False
    assert any("outside the time budget" in line and "written in 29 s" in line for line in lines)

    rerun: list[str] = []
    _search(rerun).run()
    assert fake_workers.functions().count("fill_caches") == 1  # the recorded export is still there
    assert any(line.startswith("prepared in") for line in rerun)
