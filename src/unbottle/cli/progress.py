"""Progress display for long verbs: a live line on a terminal, plain lines in logs, or nothing."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from unbottle.cli.common import err


class BenchProgress:
    """Shows the current scenario point and its repeat count.

    On a terminal a rich spinner line updates in place (on stderr); otherwise one plain line is
    printed per finished point, so CI logs stay readable; ``quiet`` prints nothing.
    """

    def __init__(self, quiet: bool = False, unit: str = "repeats") -> None:
        self.quiet = quiet
        self.unit = unit
        self.live = not quiet and sys.stderr.isatty()
        self._label = ""
        self._count = 0
        self._elapsed = 0.0

    def __enter__(self) -> BenchProgress:
        if self.live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=None)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._flush_line()
        if self.live:
            self._progress.__exit__(t, e, tb)

    def __call__(self, label: str, repeats: int, elapsed_s: float) -> None:
        if label != self._label:
            self._flush_line()
            self._label = label
        self._count, self._elapsed = repeats, elapsed_s
        if self.live:
            self._progress.update(
                self._task, description=f"{label}: {repeats} {self.unit}, {elapsed_s:.1f} s"
            )

    def message(self, text: str) -> None:
        if not self.quiet:
            err.print(text, highlight=False)

    def _flush_line(self) -> None:
        if self._label and not self.quiet:
            err.print(
                f"done {self._label}: {self._count} {self.unit} in {self._elapsed:.1f} s", highlight=False
            )
        self._label = ""
