"""Output folders are checked before any work, and a save that fails midway is one clear line."""

from __future__ import annotations

import errno

import pytest

from unbottle.core.errors import ConfigError
from unbottle.core.paths import check_writable_folder
from unbottle.passes import parse_pass
from unbottle.passes.recipe import apply_and_save


def test_an_existing_file_or_a_path_under_one_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_writable_folder(afile)
    with pytest.raises(ConfigError, match="lies under .*afile, which is a file"):
        check_writable_folder(afile / "sub" / "deeper")
    check_writable_folder(tmp_path / "new" / "folder")  # parents made later: fine
    assert afile.read_text() == "mine"


def test_a_read_only_place_is_refused_before_work(tmp_path, monkeypatch):
    monkeypatch.setattr("unbottle.core.paths.os.access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="read-only or not yours; choose another"):
        check_writable_folder(tmp_path / "out")


def test_a_save_failing_midway_is_one_line_and_leaves_nothing(tiny_llama, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("unbottle.passes.recipe.Path.write_text", full_disk)
    with pytest.raises(ConfigError, match="saving to .*out failed: No space left on device; nothing was"):
        apply_and_save(tiny_llama, [parse_pass("precision")], "tiny-llama", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
