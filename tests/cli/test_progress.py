"""Progress on stderr: throttled plain lines off a terminal, a live bar with ETA on one, nothing quiet."""

from __future__ import annotations

import io
import json
import types

from rich.console import Console
from typer.testing import CliRunner

from unbottle.cli.main import app
from unbottle.reporting import progress as progress_module
from unbottle.reporting.progress import BenchProgress, Progress


def _console(terminal: bool) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=120)


def _lines(console: Console) -> list[str]:
    return [line for line in console.file.getvalue().splitlines() if line.strip()]


class _Clock:
    """Stands in for the module's ``time``: seconds move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_plain_lines_start_end_and_are_throttled_when_not_a_terminal(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    console = _console(terminal=False)
    with Progress(console=console) as progress:
        task = progress.task("work", 1000, "items")
        for _ in range(1000):
            clock.now += 0.1
            task.advance()
    lines = _lines(console)
    assert len(lines) == 11, f"1000 advances printed {len(lines)} lines; one per tenth expected"
    assert lines[0] == "work: 0/1000 items …"
    assert lines[5] == "work: 500/1000 items (50%), 50.0 s elapsed, ~50.0 s left"
    assert lines[-1] == "work: done, 1000/1000 items in 1m40s"


def test_a_quick_task_prints_only_its_start_and_end():
    console = _console(terminal=False)
    with Progress(console=console) as progress:
        task = progress.task("work", 1000, "items")
        for _ in range(1000):
            task.advance()
    lines = _lines(console)
    assert len(lines) == 2 and lines[-1].startswith("work: done, 1000/1000 items in "), lines


def test_default_console_writes_plain_lines_to_stderr_only(capsys):
    with Progress() as progress:  # pytest's stderr is not a terminal
        progress.task("steps", 3, "steps").advance(3)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "steps: 0/3 steps …" in captured.err and "steps: done, 3/3 steps" in captured.err


def test_quiet_prints_nothing_in_either_mode():
    for terminal in (False, True):
        console = _console(terminal)
        with Progress(quiet=True, console=console) as progress:
            progress.message("loading …")
            progress.task("work", 10, "items").advance(10)
            progress.counter("perplexity", "windows")(0, 4)
        assert console.file.getvalue() == "", terminal


def test_plain_line_every_15_s_without_a_total_and_no_eta(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    console = _console(terminal=False)
    with Progress(console=console) as progress:
        task = progress.task("points", None, "repeats")
        for _ in range(100):
            clock.now += 1.0
            task.advance()
    lines = _lines(console)
    assert len(lines) == 2 + 100 // 15, lines
    assert lines[1] == "points: 15 repeats, 15.0 s elapsed"  # no total: no percentage, no ETA
    assert lines[-1] == "points: done, 100 repeats in 1m40s"


def test_clock_task_counts_seconds_of_its_budget_with_time_left(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    console = _console(terminal=False)
    with Progress(console=console) as progress:
        budget = progress.task("optimize (time budget)", 100, "s", clock=True)
        clock.now += 30
        budget.tick()
        clock.now += 2
        budget.tick()  # within the same tenth and under 15 s: no line
        clock.now += 8
    assert _lines(console) == [
        "optimize (time budget): 0/100 s …",
        "optimize (time budget): 30/100 s (30%), 30.0 s elapsed, ~1m10s left",
        "optimize (time budget): done in 40.0 s of the 1m40s budget",
    ]


def test_terminal_mode_draws_a_bar_with_count_eta_and_leaves_a_summary_line():
    console = _console(terminal=True)
    with Progress(console=console) as progress:
        task = progress.task("training", 10, "steps")
        for _ in range(4):
            task.advance(note="loss 2.500")
        progress._bars.refresh()
        drawn = console.file.getvalue()
        assert "training" in drawn and "━" in drawn, drawn
        assert "4/10 steps" in drawn and "loss 2.500" in drawn and "ETA" in drawn, drawn
        task.advance(6)
    text = console.file.getvalue()
    assert "training: done, 10/10 steps in " in text
    assert "training: 0/10 steps …" not in text  # the bar replaces the plain lines


def test_counter_starts_a_task_per_pass_and_ends_it_at_its_total():
    console = _console(terminal=False)
    with Progress(console=console) as progress:
        report = progress.evaluations("A: ")
        for _ in range(2):
            for done in range(5):
                report("perplexity", done, 4)
    lines = _lines(console)
    assert lines.count("A: perplexity: 0/4 windows …") == 2
    assert sum(line.startswith("A: perplexity: done, 4/4 windows") for line in lines) == 2


def test_bench_progress_numbers_points_and_prints_one_line_per_point():
    console = _console(terminal=False)
    with BenchProgress(points=2, console=console) as progress:
        for label in ("prefill batch_size=1", "decode batch_size=1"):
            for repeat in range(1, 4):
                progress(label, repeat, 0.1 * repeat)
    lines = _lines(console)
    assert [line.split(" in ")[0] for line in lines] == [
        "[1/2] prefill batch_size=1: done, 3 repeats",
        "[2/2] decode batch_size=1: done, 3 repeats",
    ]


def test_perplexity_reports_windows_from_zero_to_all(tiny_llama):
    from unbottle.evaluation import perplexity

    seen: list[tuple[int, int]] = []
    result = perplexity(tiny_llama, eval_tokens=300, window=64, stride=64, batch_size=2,
                        progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    n = result.details["n_windows"]
    assert seen[0] == (0, n) and seen[-1] == (n, n)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_train_cli_shows_step_progress_on_stderr_and_keeps_json_last_on_stdout(tmp_path):
    from unbottle.training.data import default_corpora

    (tmp_path / "d.txt").write_text(default_corpora()[0].files[1].read_text(encoding="utf-8")[:20000])
    args = ["train", "tiny-llama", "--data", str(tmp_path / "d.txt"), "--seq-len", "32", "--batch-size", "2",
            "--threads", "1", "--max-steps", "3", "-o", str(tmp_path / "run"), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "training: 0/3 steps …" in result.stderr
    assert "training: done, 3/3 steps in " in result.stderr and "loss " in result.stderr
    assert "training:" not in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1])["summary"]["steps"] == 3


def test_optimize_log_lines_move_the_time_budget_bar(monkeypatch, capsys):
    from unbottle.cli.optimize import log_line

    clock = _Clock()
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    console = _console(terminal=False)
    with Progress(console=console) as progress:
        log = log_line(False, progress.task("optimize (time budget)", 600, "s", clock=True))
        clock.now += 120
        log("screen:wo-int8: ok in 95 s")
    assert "] screen:wo-int8: ok in 95 s" in capsys.readouterr().err
    assert "optimize (time budget): 120/600 s (20%), 2m00s elapsed, ~8m00s left" in _lines(console)
