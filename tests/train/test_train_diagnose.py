"""The training diagnosis reads the step-time breakdown: the biggest measured share comes first."""

from __future__ import annotations

from unbottle.training.diagnose import diagnose
from unbottle.training.trainer import TrainConfig


def _summary(**shares):
    breakdown = {"data_s": 0.0, "forward_s": 0.3, "backward_s": 0.5, "optimizer_s": 0.05, **shares}
    return {"breakdown": breakdown}


def test_a_data_bound_run_is_told_to_cache_and_add_workers():
    found = diagnose(_summary(data_s=0.5, forward_s=0.2, backward_s=0.2), TrainConfig(), "on-the-fly", 0)
    assert found[0]["bound"] == "data" and found[0]["share"] == 0.5
    assert found[0]["try"] == ["data_mode=cache", "workers=2"]
    assert [f["bound"] for f in found] == ["data", "compute"]


def test_a_compute_bound_fp32_run_is_pointed_at_precision_loss_and_compile():
    found = diagnose(_summary(), TrainConfig(), "cache", 0)
    assert [f["bound"] for f in found] == ["compute"]
    assert found[0]["try"] == ["precision=bf16", "loss=fused", "compile=True"]
    tuned = TrainConfig(precision="bf16", loss="fused", compile=True)
    assert diagnose(_summary(), tuned, "cache", 0)[0]["try"] == []


def test_communication_and_optimizer_shares_are_findings_of_their_own():
    summary = {**_summary(optimizer_s=0.3), "comm_share": 0.4}
    bounds = [f["bound"] for f in diagnose(summary, TrainConfig(), "cache", 2)]
    assert bounds == ["compute", "communication", "optimizer"]
