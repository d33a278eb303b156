"""``unbottle report``: every kind gets a report in html, md and json; errors, `last`, unfinished runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.core.env import manifest
from unbottle.reporting.output import write_atomic
from unbottle.store import Store

runner = CliRunner()
KINDS = (
    "bench",
    "eval",
    "ab",
    "optimize",
    "profile",
    "train",
    "train-compare",
    "train-newer",
    "distill",
    "distill-odd",
)
# A script or stylesheet fetched from anywhere but the page itself.
EXTERNAL = re.compile(
    r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I
)


def report(*args: str):
    return runner.invoke(app, ["report", *args])


@pytest.mark.parametrize("kind", KINDS)
def test_report_of_every_kind_has_verdict_manifest_and_command(runs, tmp_path, kind):
    out = tmp_path / f"{kind}.html"
    result = report(str(runs[kind]), "-o", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "Verdict:" in page and 'id="environment"' in page and 'id="reproduce"' in page
    assert "<pre><code>unbottle " in page, "the command to reproduce the run is shown"
    assert "torch_num_threads=" in page, "the manifest's thread settings are shown"
    charted = kind not in ("distill-odd",)
    assert ('class="chart"' in page) == charted, f"{kind}: charts expected: {charted}"
    assert not EXTERNAL.search(page), EXTERNAL.search(page)


def test_html_has_no_external_script_or_style_and_plotly_inlined_once(runs, tmp_path):
    out = tmp_path / "opt.html"
    assert report(str(runs["optimize"]), "-o", str(out)).exit_code == 0
    page = out.read_text()
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", page, re.I), (
        "every script is inline (no MathJax, no CDN)"
    )
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 2 + page.count('class="chart"'), "error collector, plotly once, one per chart"
    assert sum("plotly.js v" in s for s in scripts) == 1, "plotly's bundle is inlined exactly once"
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # the bundle's own strings aside
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", markup, re.I)
    assert not re.search(r"@import|url\(", markup), "no stylesheet or font fetched by CSS"


def test_report_last_is_the_newest_run_and_default_file_is_per_run(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = report("last")
    assert result.exit_code == 0, result.output
    written = tmp_path / f"report-{runs['ab']}.html"
    assert result.stdout.strip() == str(written.name) and written.exists()
    assert "unbottle ab report" in written.read_text()


def test_unknown_run_is_one_line_naming_it_and_how_to_list_runs(runs):
    result = report("999")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "999" in lines[0] and "unbottle runs list" in lines[0], result.output


def test_report_of_an_empty_store_says_so():
    result = report("last")
    assert result.exit_code == 2 and "no run has been recorded yet" in result.output


def test_markdown_for_a_pull_request_has_verdict_ratios_with_cis_and_command(runs):
    result = report(str(runs["ab"]), "--format", "md")
    assert result.exit_code == 0, result.output
    md = result.stdout
    assert md.startswith("## unbottle ab report") and "**Verdict:**" in md
    assert re.search(r"\| decode\.tokens_per_s B/A \| ×1\.\d+ \| 1\.\d+ – 1\.\d+ \|", md), md
    assert "```sh\nunbottle ab tiny-llama tiny-llama-int8" in md
    assert "<details><summary>Environment</summary>" in md
    cpu = Store().get_run(runs["ab"]).manifest["cpu"]["model"]
    assert f"Measured on {cpu}, " in md and "one-thread bandwidth not measured here" in md


def test_the_report_names_the_one_thread_bandwidth_this_store_measured_on_the_host(store):
    run = store.start_run("bench", "tiny-llama", {"batch_sizes": [1]}, manifest())
    store.finish_run(run, "complete", result={})
    peaks = store.start_run("peaks", "-", {"threads": 1}, manifest())
    store.finish_run(peaks, "complete", result={"threads": 1, "bandwidth_gbps": 12.25})
    md = report(str(run), "--format", "md").stdout
    assert "12.2 GB/s one-thread read." in md or "12.3 GB/s one-thread read." in md


def test_json_is_one_document_with_verdict_headline_and_the_run(runs, tmp_path):
    out = tmp_path / "r.json"
    assert report(str(runs["optimize"]), "--format", "json", "-o", str(out)).exit_code == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == "optimize" and doc["status"] == "complete" and doc["verdict"].startswith("wo-int8")
    gain = next(s for s in doc["headline"] if "winner / baseline" in s["label"])
    low, high = (float(x) for x in gain["ci"].split(" – "))
    assert low < float(gain["value"].lstrip("×")) < high
    assert doc["reproduce"]["commands"][0] == "unbottle optimize tiny-llama"
    assert doc["document"]["optimize"]["winner"]["key"] == "wo-int8"


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_an_unfinished_run_still_gets_a_report_that_says_so(store, tmp_path, status):
    run = store.start_run("bench", "tiny-llama", {"batch_sizes": [1]}, manifest())
    store.finish_run(
        run, status, error="KeyboardInterrupt: " if status == "interrupted" else "BenchError: OOM"
    )
    out = tmp_path / "r.html"
    result = report(str(run), "-o", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert (
        f'class="status {status}"' in page and f"this run {status if status == 'failed' else 'was'}" in page
    )
    md = report(str(run), "--format", "md").stdout
    assert f"> **{status}:**" in md


def test_a_run_whose_process_died_reads_interrupted(store, tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    run = store.start_run("train", "tiny-llama", {"seq_len": 32}, manifest())
    store._connection(create=True).execute("UPDATE runs SET pid = ? WHERE id = ?", (int(dead.stdout), run))
    doc = json.loads(report(str(run), "--format", "json").stdout)
    assert doc["status"] == "interrupted" and "interrupted" in doc["status_note"]


def test_model_names_and_errors_are_escaped(store, tmp_path):
    run = store.start_run("bench", "<script>alert(1)</script>", {}, manifest())
    store.finish_run(run, "failed", error="</pre><img src=x onerror=alert(2)>")
    out = tmp_path / "r.html"
    assert report(str(run), "-o", str(out)).exit_code == 0
    page = out.read_text()
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "report.html"
    write_atomic(target, "old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["report.html"]


def test_an_unwritable_output_is_a_one_line_error(runs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = report(str(runs["ab"]), "-o", str(blocker / "r.html"))
    assert result.exit_code == 2 and "cannot write the report" in result.output


def test_a_compare_run_draws_the_samples_of_both_compared_runs(runs, tmp_path):
    compared = runner.invoke(app, ["compare", str(runs["bench"]), str(runs["bench-again"])])
    assert compared.exit_code == 0, compared.output
    out = tmp_path / "c.html"
    assert report("last", "-o", str(out)).exit_code == 0
    page = out.read_text()
    assert "unbottle compare report" in page
    assert 'data-chart="ratios"' in page and 'data-chart="latency"' in page
    assert f"unbottle compare {runs['bench']} {runs['bench-again']}" in page


def test_a_train_run_with_newer_fields_shows_them_without_failing(runs, tmp_path):
    doc = json.loads(report(str(runs["train-newer"]), "--format", "json").stdout)
    assert doc["verdict"].endswith("43% of each step has gradients in flight")
    tables = {t["title"]: t for t in doc["tables"]}
    finding = ["43% of each step has gradients in flight", "43%", "--grad-accum 2; --parallel fsdp"]
    assert tables["diagnosis"]["rows"][0] == finding
    assert ["fsdp.shards", "2"] in tables["run details"]["rows"], "unknown fields are shown as recorded"
    out = tmp_path / "t.html"
    assert report(str(runs["train-newer"]), "-o", str(out)).exit_code == 0
    assert '"name":"comm"' in out.read_text().replace(" ", ""), "a new per-step part is drawn too"


def test_a_report_replaces_an_earlier_report_but_never_a_users_file_and_fills_a_folder(runs, tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("my own notes")
    refused = report(str(runs["bench"]), "-o", str(mine))
    assert refused.exit_code == 2 and "exists and is not an unbottle report" in refused.stderr
    assert mine.read_text() == "my own notes"
    again = tmp_path / "bench.md"
    for _ in range(2):  # the second time replaces the first report
        assert report(str(runs["bench"]), "--format", "md", "-o", str(again)).exit_code == 0
    folder = tmp_path / "reports"
    folder.mkdir()
    assert report(str(runs["bench"]), "-o", str(folder)).exit_code == 0
    assert (folder / f"report-{runs['bench']}.html").is_file()
