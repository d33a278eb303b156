"""``unbottle report``: one stored run as a self-contained HTML page, markdown or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unbottle.cli.common import err, handle_errors
from unbottle.reporting.output import ReportFormat, render, report_target, write_atomic
from unbottle.reporting.summary import build_report
from unbottle.store import Store

EXAMPLES = """
Examples:

  unbottle report last                                # report-<id>.html: charts, verdict, CIs, manifest

  unbottle report 7 -o optimize.html

  unbottle report last --format md > pr-comment.md    # for a pull request

  unbottle report 7 --format json -o run-7.json
"""


@handle_errors
def report(
    ref: Annotated[str, typer.Argument(help="Run id, or 'last' (see `unbottle runs list`).")] = "last",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File or folder to write, '-' for stdout; default report-ID.html (md and json: stdout).",
        ),
    ] = None,
    format_: Annotated[ReportFormat, typer.Option("--format", help="html, md or json.")] = ReportFormat.html,
) -> None:
    """Write the report of a stored run: verdict, headline ratios with CIs, charts, manifest, commands."""
    built = build_report(Store(), ref)
    text = render(built, format_)
    to_stdout = str(output) == "-" or (output is None and format_ is not ReportFormat.html)
    if to_stdout:
        typer.echo(text, nl=False)
        return
    path = write_atomic(report_target(built.run.id, output, format_), text)
    err.print(f"report of run {built.run.id} ({built.run.kind}, {built.status}) written to:", highlight=False)
    print(path, flush=True)
