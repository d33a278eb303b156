"""Progress of long work, always on stderr (stdout carries the tables and the ``--json`` last line).

On a terminal every task is a live rich bar (count, elapsed time, ETA) that leaves one summary line
when it ends. Off a terminal (CI logs, pipes) a task prints a plain line when it starts, then at most
one per tenth of its total or per 15 s, and one when it ends, so a log shows progress without
flooding (a task done within a second or so prints only its start and end). ``quiet`` prints nothing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from rich import progress as rp
from rich.console import Console
from rich.table import Column
from rich.text import Text

# the one stderr console: the CLI's messages and errors print through it too, so they land above live bars
err = Console(stderr=True, soft_wrap=True)

PLAIN_EVERY_S = 15.0  # a plain line at least this often while a task advances
PLAIN_PARTS = 10  # and at most one per tenth of a task's total
PLAIN_GAP_S = 1.0  # but never two within this, so quick tasks print just their start and end
EVAL_UNITS = {"perplexity": "windows", "multiple-choice": "options"}


def duration(seconds: float) -> str:
    """``12.3 s``, ``4m05s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes}m{s:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Task:
    """One piece of work being counted; made by ``Progress.task``."""

    def __init__(
        self, owner: Progress, label: str, total: float | None, unit: str, clock: bool, completed: float
    ) -> None:
        self.owner, self.label, self.total, self.unit, self.clock = owner, label, total, unit, clock
        self.completed = self.initial = completed
        self.note = ""
        self.start = self.last_line = time.monotonic()
        self.next_part = self._part() + 1  # the next tenth that earns a plain line
        self.finished = False
        self.rich_id: Any = None

    def advance(self, n: float = 1, note: str | None = None) -> None:
        """Count ``n`` more units (and replace the note shown beside the count, e.g. the loss)."""
        self.update(self.completed + n, note=note)

    def update(
        self, completed: float | None = None, total: float | None = None, note: str | None = None
    ) -> None:
        """Set the count, the total or the note."""
        if self.finished:
            return
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        self.owner._show(self)
        if not self.clock and self.total is not None and self.completed >= self.total:
            self.done()

    def tick(self) -> None:
        """A clock task: count the seconds since it started (capped at its total)."""
        elapsed = time.monotonic() - self.start
        self.update(min(elapsed, self.total) if self.total else elapsed)

    def done(self) -> None:
        """End the task: its bar goes, one summary line stays (nothing with ``quiet``)."""
        if not self.finished:
            if self.clock:
                self.completed = time.monotonic() - self.start
            self.owner._finish(self, ok=True)

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate so far; None without a total or a rate."""
        if not self.total:
            return None
        if self.clock:
            return max(0.0, self.total - self.completed)
        done = self.completed - self.initial
        return None if done <= 0 else (now - self.start) * (self.total - self.completed) / done

    def count_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.completed:.0f}{unit}"
        return f"{self.completed:.0f}/{self.total:.0f}{unit}"

    def _part(self) -> int:
        return int(self.completed * PLAIN_PARTS / self.total) if self.total else 0


class Progress:
    """Shows tasks as bars on a terminal, as throttled plain lines elsewhere, or not at all.

    Use as a context manager; tasks still running at the end are finished (silently after an error).

    Args:
        quiet: print nothing.
        console: where to draw; default: the stderr console, live when stderr is a terminal. A given
            console is live when it is a terminal (``Console(force_terminal=True)`` in tests).
    """

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.console = console or err
        self.quiet = quiet
        interactive = self.console.is_terminal if console is not None else sys.stderr.isatty()
        self.live = not quiet and interactive and not self.console.is_dumb_terminal
        self.tasks: list[Task] = []
        self._bars: _Bars | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in list(self.tasks):
            self._finish(task, ok=t is None)
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def task(
        self,
        label: str,
        total: float | None = None,
        unit: str = "",
        *,
        clock: bool = False,
        completed: float = 0,
        announce: bool = True,
    ) -> Task:
        """Start a task of ``total`` units (None: unknown, no ETA).

        ``clock``: the count is the seconds since the start (``total`` a time budget; see
        ``Task.tick``). ``announce=False``: no plain start line (for many short tasks).
        """
        task = Task(self, label, total, unit, clock, completed)
        self.tasks.append(task)
        if self.live:
            if self._bars is None:
                self._bars = _Bars(self, console=self.console, transient=True, redirect_stdout=False)
                self._bars.start()
            task.rich_id = self._bars.add_task(label, total=total, completed=completed, unit=unit, note="")
        elif not self.quiet and announce:
            self._print(f"{label}: {task.count_text()} …")
        return task

    def message(self, text: str) -> None:
        """A line of its own (above the bars on a terminal); nothing with ``quiet``."""
        if not self.quiet:
            self._print(text)

    def counter(self, label: str, unit: str = "") -> Callable[[int, int], None]:
        """A ``(done, total)`` callback (as evaluators take) that runs one task per pass to ``total``."""
        current: list[Task] = []

        def report(done: int, total: int) -> None:
            if not current or current[0].finished:
                current[:] = [self.task(label, total, unit, completed=done)]
            current[0].update(done, total=total)  # ends the task at ``total``

        return report

    def evaluations(self, prefix: str = "") -> Callable[[str, int, int], None]:
        """An ``(evaluator, done, total)`` callback for ``unbottle.evaluation.evaluate``."""
        counters: dict[str, Callable[[int, int], None]] = {}

        def report(evaluator: str, done: int, total: int) -> None:
            if evaluator not in counters:
                counters[evaluator] = self.counter(prefix + evaluator, EVAL_UNITS.get(evaluator, ""))
            counters[evaluator](done, total)

        return report

    # ---- drawing -------------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def _show(self, task: Task) -> None:
        if self.quiet:
            return
        if self._bars is not None and task.rich_id is not None:
            self._bars.update(task.rich_id, completed=task.completed, total=task.total, note=task.note)
            return
        now = time.monotonic()
        part = task._part()
        if task.total and task.completed >= task.total:
            return  # the end line says it
        since = now - task.last_line
        if (part >= task.next_part and since >= PLAIN_GAP_S) or since >= PLAIN_EVERY_S:
            task.next_part, task.last_line = part + 1, now
            self._print(_plain_line(task, now))

    def _finish(self, task: Task, ok: bool) -> None:
        task.finished = True
        if task in self.tasks:
            self.tasks.remove(task)
        if self._bars is not None and task.rich_id is not None:
            self._bars.remove_task(task.rich_id)
            self._bars.refresh()  # else the summary line below redraws the removed bar once more
        if ok and not self.quiet:
            self._print(_end_line(task, time.monotonic()))


def _plain_line(task: Task, now: float) -> str:
    """``training: 25/50 steps (50%), loss 2.345, 12.3 s elapsed, ~12.3 s left``."""
    head = f"{task.label}: {task.count_text()}"
    if task.total:
        head += f" ({min(task.completed / task.total, 1):.0%})"
    parts = [head] + ([task.note] if task.note else []) + [f"{duration(now - task.start)} elapsed"]
    eta = task.eta(now)
    if eta is not None:
        parts.append(f"~{duration(eta)} left")
    return ", ".join(parts)


def _end_line(task: Task, now: float) -> str:
    """``training: done, 50/50 steps in 24.6 s (loss 2.101)``."""
    if task.clock:
        budget = f" of the {duration(task.total)} budget" if task.total else ""
        return f"{task.label}: done in {duration(now - task.start)}{budget}"
    note = f" ({task.note})" if task.note else ""
    return f"{task.label}: done, {task.count_text()} in {duration(now - task.start)}{note}"


class _Count(rp.ProgressColumn):
    """``25/50 steps`` (``12 repeats`` without a total)."""

    def render(self, task: rp.Task) -> Text:
        unit = f" {task.fields.get('unit', '')}".rstrip()
        return Text(f"{task.completed:.0f}" + ("" if task.total is None else f"/{task.total:.0f}") + unit)


class _Eta(rp.TimeRemainingColumn):
    """``ETA 0:00:12``; blank for a task without a total."""

    def render(self, task: rp.Task) -> Text:
        if task.total is None:
            return Text("")
        return Text("ETA ", style="progress.remaining") + super().render(task)


class _Bars(rp.Progress):
    """A rich Progress whose clock tasks count seconds as it redraws."""

    def __init__(self, owner: Progress, **kwargs: Any) -> None:
        columns = (
            rp.SpinnerColumn(),
            rp.TextColumn("{task.description}", table_column=Column(no_wrap=True, max_width=28)),
            rp.BarColumn(bar_width=20),
            _Count(table_column=Column(no_wrap=True)),
            rp.TimeElapsedColumn(table_column=Column(no_wrap=True)),
            _Eta(table_column=Column(no_wrap=True)),
            rp.TextColumn("{task.fields[note]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
        )
        self.owner = owner  # before rich's __init__, which draws once
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> Any:
        now = time.monotonic()
        for task in list(self.owner.tasks):
            if task.clock and task.rich_id is not None:
                elapsed = now - task.start
                with contextlib.suppress(KeyError):  # ended on the main thread meanwhile
                    self.update(task.rich_id, completed=min(elapsed, task.total) if task.total else elapsed)
        return super().get_renderables()


class BenchProgress(Progress):
    """The ``progress(label, repeats_done, elapsed_s)`` callback of ``unbottle.benchmarking.benchmark``.

    One task per scenario point, without a total; ``points`` (when known) numbers them ``[2/5]`` so
    the points left show. Off a terminal each point leaves one ``done`` line.
    """

    def __init__(
        self,
        quiet: bool = False,
        unit: str = "repeats",
        points: int | None = None,
        console: Console | None = None,
    ) -> None:
        super().__init__(quiet, console)
        self.unit, self.points = unit, points
        self._label = ""
        self._point: Task | None = None
        self._n = 0

    def __call__(self, label: str, repeats: int, elapsed_s: float) -> None:
        if self._point is None or label != self._label or self._point.finished:
            if self._point is not None:
                self._point.done()
            self._n += 1
            self._label = label
            shown = f"[{self._n}/{self.points}] {label}" if self.points else label
            self._point = self.task(shown, None, self.unit, announce=False)
        self._point.update(repeats)
