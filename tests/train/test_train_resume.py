"""The trainer: loss goes down, the step time is broken down, and a resumed run matches an unbroken one."""

from __future__ import annotations

import pytest
import torch

from unbottle.core.errors import ConfigError
from unbottle.models import load
from unbottle.training import checkpoint
from unbottle.training.data import TokenDataset, corpus_at, default_corpora, token_cache
from unbottle.training.loader import LoaderConfig
from unbottle.training.trainer import TrainConfig, Trainer, lr_factor


@pytest.fixture
def dataset(tmp_path, tiny_llama):
    train, _ = default_corpora()
    (tmp_path / "t.txt").write_text(train.files[0].read_text(encoding="utf-8")[:30000], encoding="utf-8")
    path, _ = token_cache(corpus_at(str(tmp_path / "t.txt")), tiny_llama.tokenizer, 32, tmp_path / "c")
    return TokenDataset(path, 32)


def _trainer(dataset, out, **kw):
    torch.set_num_threads(1)
    model = load("tiny-llama").model
    cfg = TrainConfig(max_steps=12, warmup_steps=3, lr=3e-3, **kw)
    return Trainer(model, dataset, cfg, LoaderConfig(batch_size=4, seed=1), out)


def test_training_lowers_the_loss_and_records_where_each_step_went(dataset, tmp_path):
    records = _trainer(dataset, tmp_path / "run").train()
    assert len(records) == 12
    assert records[-1]["loss"] < records[0]["loss"]
    for r in records:
        parts = r["data_s"] + r["forward_s"] + r["backward_s"] + r["optimizer_s"]
        assert 0 < parts <= r["wall_s"] * 1.0001 and r["tokens"] == 4 * 32


@pytest.mark.parametrize("precision", ["fp32", "bf16-pure"])
def test_a_run_stopped_and_resumed_reaches_the_same_loss_at_the_same_step(dataset, tmp_path, precision):
    whole = _trainer(dataset, tmp_path / "whole", precision=precision).train()
    first = _trainer(dataset, tmp_path / "split", checkpoint_every=6, precision=precision)
    first.train(steps=7)  # runs past the step-6 checkpoint, as a run killed mid-way would
    second = _trainer(dataset, tmp_path / "split", checkpoint_every=6, precision=precision)
    assert second.resume() and second.step == 6
    rest = second.train()
    assert [r["step"] for r in rest] == list(range(7, 13))
    assert rest[-1]["loss"] == pytest.approx(whole[-1]["loss"], rel=1e-5)
    assert [r["loss"] for r in second.history] == pytest.approx([r["loss"] for r in whole], rel=1e-5)


def test_a_checkpoint_from_another_model_is_refused(dataset, tmp_path):
    t = _trainer(dataset, tmp_path / "run", checkpoint_every=1)
    t.train(steps=1)
    other = Trainer(load("tiny-bert").model, dataset, TrainConfig(), LoaderConfig(), tmp_path / "run")
    with pytest.raises(ConfigError, match="use another output folder"):
        other.resume()


def test_schedule_warms_up_then_decays():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="allowed: fp32, bf16, bf16-pure, fp16"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("loss", ["chunked", "fused"])
def test_the_chunked_and_fused_losses_train_exactly_like_the_full_one(dataset, tmp_path, loss):
    full = _trainer(dataset, tmp_path / "full").train(steps=4)
    other = _trainer(dataset, tmp_path / loss, loss=loss).train(steps=4)
    assert [r["loss"] for r in other] == pytest.approx([r["loss"] for r in full], rel=1e-4)
    with pytest.raises(ConfigError, match="allowed: full, chunked, fused"):
        TrainConfig(loss="sparse")


def test_fp16_and_a_missing_gpu_are_refused_on_the_cpu(dataset, tmp_path):
    with pytest.raises(ConfigError, match="use precision=bf16"):
        TrainConfig(precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            _trainer(dataset, tmp_path / "g", device="cuda")
    with pytest.raises(ConfigError, match="allowed: cpu, cuda"):
        _trainer(dataset, tmp_path / "g", device="tpu")


def test_activation_checkpointing_trains_like_the_plain_run(dataset, tmp_path):
    plain = _trainer(dataset, tmp_path / "plain").train(steps=3)
    ckpt = _trainer(dataset, tmp_path / "ckpt", checkpointing=True).train(steps=3)
    assert [r["loss"] for r in ckpt] == pytest.approx([r["loss"] for r in plain], rel=1e-5)


def test_a_disk_full_save_keeps_the_previous_checkpoint(dataset, tmp_path, monkeypatch):
    import errno

    import safetensors.torch

    from unbottle.core.errors import TrainError

    t = _trainer(dataset, tmp_path / "run")
    t.train(steps=1)
    t.save()
    t.train(steps=1)
    real = safetensors.torch.save_file

    def full_disk(state, path, *a, **kw):
        real(dict(list(state.items())[:2]), path)  # a partial file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(
        TrainError, match="No space left on device; the previous checkpoint step-0000001 is intact"
    ):
        t.save()
    monkeypatch.setattr(checkpoint, "save_file", real)
    assert (tmp_path / "run" / "latest").read_text() == "step-0000001"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["latest", "step-0000001"]
    again = _trainer(dataset, tmp_path / "run")
    assert again.resume() and again.step == 1


def test_torch_save_failing_on_a_full_disk_is_the_same_clean_error(dataset, tmp_path, monkeypatch):
    from unbottle.core.errors import TrainError

    t = _trainer(dataset, tmp_path / "run")
    t.train(steps=1)
    t.save()
    t.train(steps=1)

    def full_disk(*args, **kwargs):  # what torch.save raises when the disk fills mid-write
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1024 vs 512")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(TrainError, match="unexpected pos .*; the previous checkpoint step-0000001 is intact"):
        t.save()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["latest", "step-0000001"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_training_on_the_gpu_with_mixed_precision_and_async_copies(dataset, tmp_path, precision):
    t = _trainer(dataset, tmp_path / "gpu", device="cuda", precision=precision, checkpoint_every=6)
    records = t.train()
    assert records[-1]["loss"] < records[0]["loss"]
    assert (t.scaler is not None) == (precision == "fp16")
    assert next(t.base.parameters()).device.type == "cuda"
    again = _trainer(dataset, tmp_path / "gpu", device="cuda", precision=precision, checkpoint_every=6)
    assert again.resume() and again.step == 12


def test_batches_reach_the_device_unchanged(dataset):
    from unbottle.training.loader import ResumableSampler, make_loader, to_device

    loader = make_loader(dataset, LoaderConfig(batch_size=4), ResumableSampler(len(dataset), 0))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    moved = [b.cpu() for b in to_device(iter(loader), device)]
    plain = list(make_loader(dataset, LoaderConfig(batch_size=4), ResumableSampler(len(dataset), 0)))
    assert len(moved) == len(plain) and all(torch.equal(a, b) for a, b in zip(moved, plain, strict=True))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lr": 1e-3}, "lr=0.003 then, lr=0.001 now"),
        ({"precision": "bf16-pure"}, "precision=fp32 then, precision=bf16-pure now"),
        ({"grad_accum": 2}, "global_batch=4 then, global_batch=8 now"),
        ({"max_steps": 3}, "is at step 6, past max_steps=3"),
    ],
)
def test_resuming_with_settings_that_change_the_training_is_refused(dataset, tmp_path, change, words):
    first = _trainer(dataset, tmp_path / "run", checkpoint_every=6)
    first.train(steps=6)
    settings = {"checkpoint_every": 6, "lr": 3e-3, **change}
    model = load("tiny-llama").model
    cfg = TrainConfig(**{"max_steps": 12, "warmup_steps": 3, **settings})
    again = Trainer(model, dataset, cfg, LoaderConfig(batch_size=4, seed=1), tmp_path / "run")
    with pytest.raises(ConfigError, match=words):
        again.resume()


def test_resuming_with_more_steps_or_another_sequence_length_is_judged_correctly(
    dataset, tmp_path, tiny_llama
):
    first = _trainer(dataset, tmp_path / "run", checkpoint_every=6)
    first.train(steps=6)
    cfg = TrainConfig(max_steps=20, warmup_steps=3, lr=3e-3, checkpoint_every=6)  # more steps: a longer run
    longer = Trainer(
        load("tiny-llama").model, dataset, cfg, LoaderConfig(batch_size=4, seed=1), tmp_path / "run"
    )
    assert longer.resume() and longer.step == 6
    path, _ = token_cache(corpus_at(str(tmp_path / "t.txt")), tiny_llama.tokenizer, 16, tmp_path / "c")
    other = _trainer(TokenDataset(path, 16), tmp_path / "run", checkpoint_every=6)
    with pytest.raises(ConfigError, match="seq_len=32 then, seq_len=16 now"):
        other.resume()
