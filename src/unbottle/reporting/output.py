"""Rendering a stored run's report in one of its formats, and writing it to disk atomically.

A report is written to a temporary file beside its destination and moved into place with
``os.replace``, so a reader (a browser reloading, a CI step uploading it) sees the old report or the
new one, never half a file, even if unbottle is killed mid-write.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

from unbottle.core.errors import ConfigError
from unbottle.core.naming import opt
from unbottle.core.paths import write_text_atomic
from unbottle.reporting.html import render_html
from unbottle.reporting.markdown import render_markdown
from unbottle.reporting.summary import build_report, report_json
from unbottle.store import codec


class ReportFormat(enum.StrEnum):
    """What ``unbottle report`` writes."""

    html = "html"
    md = "md"
    json = "json"


def render(report: Any, fmt: ReportFormat | str) -> str:
    """The text of ``report`` (a ``Report``) in format ``fmt``."""
    fmt = ReportFormat(fmt)
    if fmt is ReportFormat.html:
        return render_html(report)
    if fmt is ReportFormat.md:
        return render_markdown(report)

    return json.dumps(codec.plain(report_json(report)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def default_path(run_id: int, fmt: ReportFormat | str = ReportFormat.html) -> Path:
    """``report-<id>.<ext>`` in the current folder: one file per run, never another run's."""
    return Path(f"report-{run_id}.{ReportFormat(fmt).value}")


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (folders created) through a temporary file and ``os.replace``.

    Raises:
        ConfigError: the file or its folder cannot be written.
    """
    try:
        return write_text_atomic(path, text)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report to {path} ({exc.strerror or exc}); "
            f"choose a writable file with {opt('path', flag='-o')}"
        ) from exc


def write_report(
    store: Any, ref: int | str, path: Path | None = None, fmt: ReportFormat | str = "html"
) -> Path:
    """Build run ``ref``'s report from ``store`` and write it to ``path`` (default: ``default_path``;
    a folder: ``default_path`` inside it), replacing only an earlier report.

    Returns:
        The file written.

    Raises:
        StoreError: no such run. ConfigError: the file cannot be written.
    """
    report = build_report(store, ref)
    return write_atomic(report_target(report.run.id, path, fmt), render(report, fmt))


def report_target(run_id: int, path: Path | None, fmt: ReportFormat | str = "html") -> Path:
    """Where run ``run_id``'s report goes: ``path``, ``default_path`` inside it when it is a folder,
    or ``default_path`` when None; an existing file only when it is an earlier unbottle report (its
    first 4 KiB name unbottle, as every format's title or fields do), so a user's own file is never
    overwritten.

    Raises:
        ConfigError: ``path`` is an existing file that is not an unbottle report.
    """
    target = default_path(run_id, fmt)
    if path is not None:
        target = Path(path) / target if Path(path).is_dir() else Path(path)
    if not target.is_file():
        return target
    with target.open("rb") as fh:
        head = fh.read(4096)
    if b"unbottle" not in head.lower():
        raise ConfigError(
            f"{target} exists and is not an unbottle report; choose another {opt('path', flag='-o')} "
            "(a new file, or a folder to write report-ID there)"
        )
    return target
