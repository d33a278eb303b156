"""The report as GitHub-flavoured markdown, to paste into a pull request: no charts, same numbers.

Table cells escape ``|`` and line breaks so a model path or an error message cannot break the table;
the environment manifest sits in a collapsed ``<details>`` block to keep the description short.
"""

from __future__ import annotations

from unbottle.reporting.parts import Report, TableData
from unbottle.reporting.reproduce import display_lines
from unbottle.reporting.summary import manifest_rows, run_rows


def cell(text: object) -> str:
    """One table cell: pipes escaped, line breaks as spaces, never empty."""
    value = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip()
    return value or " "


def _table(
    columns: tuple[str, ...] | list[str], rows: list[tuple[str, ...]] | tuple[tuple[str, ...], ...]
) -> str:
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _data_table(t: TableData) -> str:
    text = f"**{t.title}**\n\n" + _table(t.columns, t.rows or ((("(none)",) + ("",) * (len(t.columns) - 1)),))
    return text + (f"\n\n_{t.caption}_" if t.caption else "")


def render_markdown(report: Report) -> str:
    """The markdown text of ``report``."""
    run = report.run
    out = [f"## unbottle {run.kind} report: run {run.id} — {run.model}", ""]
    out.append(
        f"Status: **{report.status}** · started {run.created_at}"
        + (f" · finished {run.finished_at}" if run.finished_at else "")
    )
    if report.machine:
        out += ["", f"Measured on {report.machine}."]
    if report.status_note:
        out += ["", f"> **{report.status}:** {report.status_note}"]
    if report.verdict:
        out += ["", f"**Verdict:** {report.verdict}"]
    if report.headline:
        rows = [(s.label, s.value + (f" ({s.note})" if s.note else ""), s.ci or "-") for s in report.headline]
        out += ["", _table(("what", "value", "95% CI"), rows)]
    for t in report.tables:
        out += ["", _data_table(t)]
    if report.notes:
        out += ["", "**Notes**", ""] + [f"- {n}" for n in report.notes]
    if report.reproduce is not None:
        how = "rebuilt from the stored config" if report.reproduce.reconstructed else "as recorded"
        commands = [display_lines(c) for c in report.reproduce.commands]
        out += ["", f"**Reproduce** ({how})", "", "```sh", *commands, "```"]
        out += [f"- {n}" for n in report.reproduce.notes]
    manifest = run_rows(report) + manifest_rows(run.manifest or {})
    out += [
        "",
        "<details><summary>Environment</summary>",
        "",
        _table(("what", "value"), manifest),
        "",
        "</details>",
    ]
    out += ["", f"_Charts: `unbottle report {run.id}` writes the HTML report._", ""]
    return "\n".join(out)
