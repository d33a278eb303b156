"""``unbottle.report``: a stored run as a self-contained HTML page, markdown or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unbottle.api._common import store_of
from unbottle.reporting.output import write_report


def report(
    run: int | str = "last",
    path: str | Path | None = None,
    *,
    format: str = "html",
    store: Any = None,  # noqa: A002
) -> Path:
    """Write run ``run``'s report (verdict, headline ratios with intervals, charts, manifest, commands)
    to ``path`` (default ``report-<id>.<format>`` here), atomically; return the file written.

    ``format``: ``html``, ``md`` or ``json``. Use ``reporting.output.render`` for the text alone.
    """
    return write_report(store_of(store), run, None if path is None else Path(path), format)
