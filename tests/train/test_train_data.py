"""The training data pipeline: a token cache built once and reused, datasets, a resumable loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unbottle.core.errors import ConfigError
from unbottle.training.data import (
    Corpus,
    OnTheFlyDataset,
    TokenDataset,
    corpus_at,
    default_corpora,
    token_cache,
    tokenizer_fingerprint,
)
from unbottle.training.loader import LoaderConfig, ResumableSampler, make_loader


@pytest.fixture
def small_corpus(tmp_path):
    train, _ = default_corpora()
    text = train.files[0].read_text(encoding="utf-8")[:20000]
    (tmp_path / "a.txt").write_text(text[:12000], encoding="utf-8")
    (tmp_path / "b.txt").write_text(text[12000:], encoding="utf-8")
    return corpus_at(str(tmp_path))


def test_default_corpora_hold_out_persuasion():
    train, held = default_corpora()
    assert len(train.files) == 5 and all(f.stat().st_size > 100_000 for f in train.files)
    assert [f.name for f in held.files] == ["persuasion.txt"]
    assert "persuasion.txt" not in {f.name for f in train.files}


def test_the_cache_is_built_once_and_keyed_by_corpus_tokenizer_and_length(small_corpus, tiny_llama, tmp_path):
    tok = tiny_llama.tokenizer
    path, built = token_cache(small_corpus, tok, 64, tmp_path / "c")
    again, built_again = token_cache(small_corpus, tok, 64, tmp_path / "c")
    assert built and not built_again and again == path
    other_len, built_len = token_cache(small_corpus, tok, 32, tmp_path / "c")
    assert built_len and other_len != path
    ids = np.load(path)
    assert ids.dtype == np.uint16 and ids[-1] == tok.eos_token_id  # documents end with EOS
    assert list(ids[:20]) == tok(small_corpus.texts()[0][:20], add_special_tokens=False)["input_ids"][:20]
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(tok)


def test_token_dataset_gives_shifted_windows_without_overlap(small_corpus, tiny_llama, tmp_path):
    path, _ = token_cache(small_corpus, tiny_llama.tokenizer, 64, tmp_path)
    ds = TokenDataset(path, 64)
    ids = np.load(path)
    assert len(ds) == (ids.size - 1) // 64
    assert ds[0].shape == (65,) and ds[0].dtype == torch.long
    assert torch.equal(ds[1][0], torch.tensor(int(ids[64])))  # window i starts at i * seq_len


def test_a_corpus_smaller_than_one_sequence_is_refused(tmp_path, tiny_llama):
    (tmp_path / "tiny.txt").write_text("Too short.", encoding="utf-8")
    with pytest.raises(ConfigError, match="fewer than one sequence of 512"):
        token_cache(corpus_at(str(tmp_path / "tiny.txt")), tiny_llama.tokenizer, 512, tmp_path / "c")


def test_bad_corpus_paths_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        corpus_at(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without .txt files"):
        corpus_at(str(tmp_path / "empty"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="UTF-8"):
        Corpus((tmp_path / "bin.txt",), "x").texts()


def test_on_the_fly_dataset_tokenises_each_access_to_the_same_shape(small_corpus, tiny_llama):
    ds = OnTheFlyDataset(small_corpus, tiny_llama.tokenizer, 64, n_items=50)
    assert len(ds) == 50
    assert all(ds[i].shape == (65,) for i in (0, 17, 49))


def test_the_sampler_resumes_exactly_where_it_stopped():
    full = list(ResumableSampler(100, seed=3, epoch=1))
    assert sorted(full) == list(range(100))
    assert list(ResumableSampler(100, seed=3, epoch=1, position=40)) == full[40:]
    assert full != list(ResumableSampler(100, seed=3, epoch=2))  # a new order every epoch
    ranks = [list(ResumableSampler(100, seed=3, epoch=1, rank=r, world=2)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(100)) and not set(ranks[0]) & set(ranks[1])


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_yields_whole_batches_with_workers(small_corpus, tiny_llama, tmp_path, workers):
    path, _ = token_cache(small_corpus, tiny_llama.tokenizer, 32, tmp_path)
    ds = TokenDataset(path, 32)
    loader = make_loader(ds, LoaderConfig(batch_size=4, workers=workers), ResumableSampler(len(ds), 0))
    batches = list(loader)
    assert len(batches) == len(ds) // 4 and all(b.shape == (4, 33) for b in batches)


def test_loader_settings_are_checked():
    with pytest.raises(ConfigError, match="workers=-1 given"):
        LoaderConfig(workers=-1)
