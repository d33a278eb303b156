"""Distillation: students built from a teacher's layers, the KD loss, and ``unbottle distill`` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.core.errors import ConfigError
from unbottle.training.distill import DistillLoss, build_student, parse_shape

runner = CliRunner()


def _teacher(layers=4):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def test_half_keeps_first_and_last_layers_and_the_student_runs_with_a_kv_cache(tmp_path):
    teacher = _teacher(4)
    shape = parse_shape("half", 4, 64)
    assert shape.layers == (0, 3)
    student = build_student(teacher, shape)
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    assert len(teacher.model.layers) == 4  # the teacher is untouched
    x = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        cached = student.generate(x, max_new_tokens=5, do_sample=False, use_cache=True)
        uncached = student.generate(x, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    student.save_pretrained(tmp_path / "s")
    again = LlamaForCausalLM.from_pretrained(tmp_path / "s").eval()
    with torch.no_grad():
        assert torch.allclose(again(x).logits, student(x).logits, atol=1e-5)


def test_a_narrowed_mlp_keeps_its_strongest_units_and_full_width_changes_nothing():
    teacher = _teacher(2)
    narrow = build_student(teacher, parse_shape("layers=2,intermediate=16", 2, 64))
    mlp = narrow.model.layers[0].mlp
    assert mlp.up_proj.weight.shape == (16, 32) and mlp.down_proj.weight.shape == (32, 16)
    assert narrow.config.intermediate_size == 16
    with torch.no_grad():
        out = narrow(torch.randint(0, 97, (2, 5))).logits
    assert out.shape == (2, 5, 97) and torch.isfinite(out).all()
    same = build_student(teacher, parse_shape("layers=1,intermediate=64", 2, 64))
    assert torch.equal(
        same.model.layers[0].mlp.down_proj.weight, teacher.model.layers[1].mlp.down_proj.weight
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [("layers=0", "allowed: 1 to the teacher's 4"), ("layers=4", "as large as the teacher"),
     ("intermediate=999", "allowed: 1 to the teacher's MLP width 64")],
)  # fmt: skip
def test_impossible_student_shapes_are_refused(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_shape(spec, 4, 64)


def test_kd_loss_trains_only_the_student_and_alpha_zero_is_plain_cross_entropy():
    teacher, student = _teacher(2), build_student(_teacher(2), parse_shape("half", 2, 64))
    batch = torch.randint(0, 97, (2, 9))
    loss = DistillLoss(student, teacher, alpha=0.5, temperature=2.0)
    assert not any(p is q for p in loss.parameters() for q in teacher.parameters())
    loss(batch).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert loss.parts["kl"] > 0
    ce_only = DistillLoss(student, teacher, alpha=0.0, temperature=2.0)(batch)
    expected = torch.nn.functional.cross_entropy(
        student(batch[:, :-1]).logits.flatten(0, 1), batch[:, 1:].flatten()
    )
    assert float(ce_only.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    same = DistillLoss(teacher, teacher, alpha=1.0, temperature=2.0)(batch)  # a student equal to its teacher
    assert float(same) == pytest.approx(0.0, abs=1e-5)


def _data(tmp_path):
    from unbottle.training.data import default_corpora

    (tmp_path / "d.txt").write_text(default_corpora()[0].files[0].read_text(encoding="utf-8")[:30000])
    return str(tmp_path / "d.txt")


def test_distill_cli_reports_teacher_distilled_and_plain_student_on_the_same_windows(tmp_path):
    args = ["distill", "tiny-llama", "--data", _data(tmp_path), "--seq-len", "32", "--batch-size", "4",
            "--max-steps", "6", "--eval-tokens", "512", "--window", "64", "--threads", "1",
            "-o", str(tmp_path / "run"), "--json", "-q"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output.strip().splitlines()[-1])
    assert set(doc["models"]) == {"teacher", "initial student", "distilled student", "no-distill student"}
    assert doc["student"]["layers"] == 1 and doc["runs"]["distilled"]["steps"] == 6
    assert {"ce", "kl"} <= set(doc["runs"]["distilled"]["history"][-1])
    gain = doc["comparisons"]["distilled vs no-distill"]
    assert gain["verdict"] in ("better", "worse", "no significant difference")
    assert gain["pct"]["ci_low"] <= gain["pct"]["point"] <= gain["pct"]["ci_high"]
    # the saved student is a model every verb loads
    ev = runner.invoke(app, ["eval", doc["saved"]["distilled"], "--eval-tokens", "512", "--window", "64",
                             "--json", "-q"])  # fmt: skip
    assert ev.exit_code == 0, ev.output
    ppl = json.loads(ev.output.strip().splitlines()[-1])["evals"][0]["value"]
    assert ppl == pytest.approx(doc["models"]["distilled student"]["perplexity"], rel=1e-4)
    shown = runner.invoke(app, ["runs", "show", str(doc["run_id"])])
    assert shown.exit_code == 0 and "distill" in shown.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass --resume" in again.output


def test_a_student_with_another_tokenizer_is_refused(tmp_path, tiny_llama):
    from unbottle.models import load

    other = load("tiny-llama")
    other.tokenizer.add_tokens(["<unbottle-extra>"])
    other.model.resize_token_embeddings(len(other.tokenizer))
    other.model.save_pretrained(tmp_path / "student")
    other.tokenizer.save_pretrained(tmp_path / "student")
    result = runner.invoke(app, ["distill", "tiny-llama", "--student", str(tmp_path / "student"),
                                 "-o", str(tmp_path / "o"), "-q"])  # fmt: skip
    assert result.exit_code == 2 and "has another tokenizer than teacher" in result.output


def test_an_interrupted_distillation_resumes_both_runs_to_the_same_result(tmp_path):
    args = ["distill", "tiny-llama", "--data", _data(tmp_path), "--seq-len", "32", "--batch-size", "4",
            "--max-steps", "4", "--checkpoint-every", "2", "--eval-tokens", "512", "--window", "64",
            "--threads", "1", "-o", str(tmp_path / "run"), "--json", "-q"]  # fmt: skip
    whole = json.loads(runner.invoke(app, args).output.strip().splitlines()[-1])
    for run in ("distilled", "no-distill"):  # as if killed after the step-2 checkpoints
        (tmp_path / "run" / run / "latest").write_text("step-0000002", encoding="utf-8")
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    resumed = json.loads(result.output.strip().splitlines()[-1])
    for run in ("distilled", "no-distill"):
        assert resumed["runs"][run]["resumed_from"] == 2
        losses = [h["loss"] for h in resumed["runs"][run]["history"]]
        assert losses == pytest.approx([h["loss"] for h in whole["runs"][run]["history"]], rel=1e-5)
    got, want = (d["models"]["distilled student"]["perplexity"] for d in (resumed, whole))
    assert got == pytest.approx(want, rel=1e-5)
