"""``unbottle profile`` on tiny-llama: the document, the stored run, the traces, bad input."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.store import Store

runner = CliRunner()


def _json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_profile_reports_peaks_phases_roofline_and_diagnosis(tmp_path):
    result = runner.invoke(
        app, ["profile", "tiny-llama", "--threads", "1", "--trace", str(tmp_path / "t"), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = _json(result)["profile"]
    assert doc["peaks"]["bandwidth_gbps"] > 0 and "float32" in doc["peaks"]["matmul_gflops"]
    for phase in ("prefill", "decode"):
        data = doc["phases"][phase]
        assert sum(data["groups"].values()) == pytest.approx(data["wall_s"], rel=1e-6)  # remainder = other
        assert {"attention", "mlp", "norms", "lm_head", "embedding"} <= set(data["groups"])
        assert data["ops"] and doc["roofline"][phase]["bound"] in (
            "memory-bound",
            "compute-bound",
            "overhead-bound",
        )
    assert doc["diagnosis"]["findings"][0]["cost_s"] >= doc["diagnosis"]["findings"][-1]["cost_s"]
    # tiny-llama's weights and KV cache fit in any last-level cache: judged against cache bandwidth
    llc = doc["peaks"]["llc_bytes"]
    assert doc["peaks"]["dram_working_set_bytes"] >= 4 * (llc or 0)
    for phase, row in doc["roofline"].items():
        assert row["cache_resident"] is (None if llc is None else True), (phase, row)
        assert row["bandwidth"] == ("dram" if llc is None else "cache")
        assert row["step_bytes"] <= (llc or float("inf"))
    assert set(doc["decode_ceiling_bandwidths"]) == set(doc["decode_ceilings"])
    assert all(os.path.getsize(p) > 0 for p in doc["traces"])
    assert Store().get_run("last").kind == "profile"
    shown = runner.invoke(app, ["runs", "show", "last"])
    assert shown.exit_code == 0 and "roofline" in shown.output and "diagnosis" in shown.output
    again = runner.invoke(app, ["profile", "tiny-llama", "--threads", "1", "--json"])
    assert _json(again)["profile"]["peaks"]["run_id"] == doc["peaks"]["run_id"]  # peaks cached


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--decode-tokens", "2"], "too short to see the phase"),
        (["--prompt-length", "4"], "too short to see the phase"),
    ],
)
def test_windows_too_short_to_see_a_phase_are_refused(args, message):
    result = runner.invoke(app, ["profile", "tiny-llama", *args])
    assert result.exit_code == 2 and message in result.output


def test_an_unwritable_trace_folder_is_refused_before_loading(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["profile", "tiny-llama", "--trace", str(blocker / "traces")])
    assert result.exit_code == 2 and "cannot write there" in result.output
    assert "choose a writable folder" in result.output


def test_models_that_do_not_load_or_are_not_causal_lms_fail_clearly():
    result = runner.invoke(app, ["profile", "tiny-bert"])
    assert result.exit_code == 2 and "causal language models" in result.output
    result = runner.invoke(app, ["profile", "/no/such/model"])
    assert result.exit_code == 2 and "error:" in result.output


def test_optimize_orders_its_candidates_by_the_latest_profile(tmp_path):
    from unbottle.optimizer import OptimizeConfig, Search

    result = runner.invoke(app, ["profile", "tiny-llama", "--threads", "1", "--json"])
    diagnosis = _json(result)["profile"]["diagnosis"]
    search = Search(OptimizeConfig(model="tiny-llama", threads=1), Store(), tmp_path / "out")
    order = search.profile_order()
    assert order == diagnosis["recommended_by_phase"]["decode"]
    assert order[0] in ("compile", "onnx")  # tiny-llama decoding is overhead-bound
    assert search.profile_run == _json(result)["run_id"]
    assert (
        Search(
            OptimizeConfig(model="tiny-llama", threads=1, objective="size"), Store(), tmp_path / "o2"
        ).profile_order()
        is None
    )


def test_cuda_without_a_gpu_is_refused_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    result = runner.invoke(app, ["profile", "tiny-llama", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU is visible" in result.output
    result = runner.invoke(app, ["profile", "tiny-llama", "--device", "tpu"])
    assert result.exit_code == 2 and "allowed: cpu, cuda, cuda:N" in result.output


@pytest.mark.gpu
def test_profile_on_a_gpu_uses_device_kernel_time(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; none is visible")
    result = runner.invoke(
        app, ["profile", "tiny-llama", "--device", "cuda", "--trace", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = _json(result)["profile"]
    assert "float16" in doc["peaks"]["matmul_gflops"]
    for phase in ("prefill", "decode"):
        assert 0 < doc["phases"][phase]["kernel_s"] <= doc["phases"][phase]["wall_s"] * 1.01
