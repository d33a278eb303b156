"""One self-contained HTML page per run: works offline, from a file, attached to a mail or a CI artefact.

The page carries everything it needs: its styles, and plotly's own bundled JavaScript inlined once
(no CDN, no MathJax, no web fonts), so it renders with the network off and never calls out. Every text
from the store is HTML-escaped; figure data goes in as JSON with ``</`` escaped, so a model name or a
path cannot end a script early. A tiny collector (``window.__unbottleErrors``) records script errors and
each chart marks itself ``data-rendered`` once drawn, so a headless browser can check the page.
"""

from __future__ import annotations

import html
import json
from typing import Any

from plotly.offline import get_plotlyjs
from plotly.utils import PlotlyJSONEncoder

from unbottle.reporting.parts import Report, TableData
from unbottle.reporting.reproduce import display_lines
from unbottle.reporting.run_kinds import charts_for
from unbottle.reporting.styles import Chart
from unbottle.reporting.summary import manifest_rows, run_rows

_CSS = """
:root { --fg:#1b1f23; --muted:#5f6b76; --line:#d8dee4; --good:#2e7d32; --bad:#c62828; --neutral:#6d6d6d;
        --accent:#1f4e79; --bg-soft:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:#fff;
       font:15px/1.5 "DejaVu Sans", "Segoe UI", Arial, sans-serif; }
main { max-width:1240px; margin:0 auto; padding:24px 32px 48px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:19px; margin:36px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:16px; margin:0 0 6px; }
.sub { color:var(--muted); margin:0 0 16px; }
.status { padding:10px 14px; border-radius:6px; margin:12px 0; font-weight:600; }
.status.failed, .status.interrupted, .status.goal-missed {
  background:#fdecea; color:var(--bad); border:1px solid #f5c2c0; }
.status.running { background:#fff8e1; color:#8d6e00; border:1px solid #ffe08a; }
.verdict { font-size:17px; padding:14px 18px; background:var(--bg-soft); border-left:5px solid var(--accent);
           border-radius:4px; margin:12px 0 18px; overflow-wrap:anywhere; }
.stats { display:grid; grid-template-columns:repeat(auto-fill, minmax(230px, 1fr)); gap:10px; }
.stat { border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.stat .label { color:var(--muted); font-size:13px; overflow-wrap:anywhere; }
.stat .value { font-size:21px; font-weight:700; overflow-wrap:anywhere; }
.stat .ci { color:var(--muted); font-size:13px; }
.stat.long .value { font-size:16px; }
.stat.good .value { color:var(--good); } .stat.bad .value { color:var(--bad); }
.stat.good { border-left:4px solid var(--good); } .stat.bad { border-left:4px solid var(--bad); }
.stat.neutral { border-left:4px solid var(--neutral); }
figure.chart { margin:0 0 26px; padding:12px 14px; border:1px solid var(--line); border-radius:6px; }
figure.chart .plot { width:100%; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.table-wrap { overflow-x:auto; margin:0 0 22px; }
table { border-collapse:collapse; font-size:13.5px; min-width:50%; }
caption { text-align:left; font-weight:700; padding:4px 0 6px; caption-side:top; }
th, td { border-bottom:1px solid var(--line); padding:5px 10px; text-align:left; vertical-align:top; }
th { background:var(--bg-soft); white-space:nowrap; }
td { overflow-wrap:break-word; }
td.nw { white-space:nowrap; }
tbody tr:nth-child(even) td { background:#fbfcfd; }
.table-note { color:var(--muted); font-size:13px; margin:4px 0 0; }
ul.notes li { margin:3px 0; overflow-wrap:anywhere; }
pre { background:#0f1720; color:#e6edf3; padding:12px 14px; border-radius:6px; overflow-x:auto;
      font:13.5px/1.5 "DejaVu Sans Mono", Consolas, monospace; white-space:pre; }
nav { font-size:14px; color:var(--muted); }
nav a { color:var(--accent); margin-right:12px; text-decoration:none; }
.kv td:first-child { font-weight:600; white-space:nowrap; }
footer { color:var(--muted); font-size:12px; margin-top:36px; }
"""

_ERROR_COLLECTOR = (
    "window.__unbottleErrors=[];"
    'window.addEventListener("error",function(e){window.__unbottleErrors.push(String(e.message||e));});'
    'window.addEventListener("unhandledrejection",function(e){'
    'window.__unbottleErrors.push("unhandled rejection: "+String(e.reason));});'
)
_NOWRAP_CHARS = 26
# No mode bar: its buttons cover legends, and zoom (drag) and reset (double-click) work without it.
_PLOT_CONFIG = {"responsive": True, "displaylogo": False, "showLink": False, "displayModeBar": False}


def esc(text: Any) -> str:
    """HTML-escape any value's text, quotes included."""
    return html.escape(str(text), quote=True)


def script_json(text: str) -> str:
    """JSON text made safe to inline in a ``<script>``: no ``</`` can close it, no ``<!--`` open a comment."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(report: Report) -> str:
    """The full page of ``report``, as one string."""
    charts, chart_notes = charts_for(report)
    manifest = run_rows(report) + manifest_rows(report.run.manifest or {})
    sections = {
        "charts": _charts(charts),
        "details": "".join(_table(t) for t in report.tables),
        "notes": _notes(report.notes + chart_notes),
        "environment": _kv_table(manifest),
        "reproduce": _reproduce(report),
    }
    body = [_header(report, [k for k, v in sections.items() if v])]
    body += [_section(k, k.capitalize(), v) for k, v in sections.items() if v]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(report.title)}</title>\n<style>{_CSS}</style>\n"
        f"<script>{_ERROR_COLLECTOR}</script>\n{_plotly_js() if charts else ''}</head>\n<body>\n<main>\n"
        + "\n".join(b for b in body if b)
        + f"\n<footer>made by <code>unbottle report {report.run.id}</code> from the store; "
        "the page needs no network.</footer>\n</main>\n</body>\n</html>\n"
    )


def _plotly_js() -> str:
    return f"<script>{get_plotlyjs()}</script>\n"


def _header(report: Report, sections: list[str]) -> str:
    run = report.run
    nav = " ".join(f'<a href="#{key}">{key.capitalize()}</a>' for key in sections)
    finished = f", finished {esc(run.finished_at)}" if run.finished_at else ""
    parts = [
        f"<h1>{esc(report.title)}</h1>",
        f'<p class="sub">{esc(run.kind)} run, status <b>{esc(report.status)}</b>, '
        f"started {esc(run.created_at)}{finished}"
        + (f"<br>measured on {esc(report.machine)}" if report.machine else "")
        + "</p>",
        f"<nav>{nav}</nav>",
    ]
    if report.status_note:
        parts.append(f'<div class="status {esc(report.status)}" role="alert">{esc(report.status_note)}</div>')
    if report.verdict:
        parts.append(f'<div class="verdict"><b>Verdict:</b> {esc(report.verdict)}</div>')
    if report.headline:
        parts.append('<div class="stats">' + "".join(_stat(s) for s in report.headline) + "</div>")
    return '<section id="summary">\n' + "\n".join(parts) + "\n</section>"


def _stat(s: Any) -> str:
    ci = f'<div class="ci">95% CI {esc(s.ci)}</div>' if s.ci else ""
    ci += f'<div class="ci">{esc(s.note)}</div>' if s.note else ""
    long = " long" if len(s.value) > 14 else ""
    return (
        f'<div class="stat {esc(s.tone)}{long}"><div class="label">{esc(s.label)}</div>'
        f'<div class="value">{esc(s.value)}</div>{ci}</div>'
    )


def _section(key: str, title: str, inner: str) -> str:
    return f'<section id="{esc(key)}">\n<h2>{esc(title)}</h2>\n{inner}\n</section>'


def _charts(charts: list[Chart]) -> str:
    return "\n".join(_chart(c, i) for i, c in enumerate(charts))


def _chart(chart: Chart, index: int) -> str:
    div = f"plot-{index}-{chart.key}"
    figure = chart.figure.to_plotly_json()
    payload = script_json(
        json.dumps(
            {"data": figure.get("data", []), "layout": figure.get("layout", {})}, cls=_plotly_encoder()
        )
    )
    script = (
        f"(function(){{var f={payload};var el=document.getElementById({json.dumps(div)});"
        f"Plotly.newPlot(el,f.data,f.layout,{json.dumps(_PLOT_CONFIG)})"
        '.then(function(){el.setAttribute("data-rendered","1");})'
        '.catch(function(e){window.__unbottleErrors.push("chart ' + esc(chart.key) + ': "+String(e));});})();'
    )
    caption = f"<figcaption>{esc(chart.caption)}</figcaption>" if chart.caption else ""
    return (
        f'<figure class="chart" data-chart="{esc(chart.key)}">\n<h3>{esc(chart.title)}</h3>\n'
        f'<div class="plot" id="{esc(div)}"></div>\n{caption}\n<script>{script}</script>\n</figure>'
    )


def _plotly_encoder() -> Any:
    return PlotlyJSONEncoder


def _table(t: TableData) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in t.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in t.rows)
    note = f'<p class="table-note">{esc(t.caption)}</p>' if t.caption else ""
    body = rows or f'<tr><td colspan="{len(t.columns)}">(none)</td></tr>'
    return (
        f'<div class="table-wrap"><table><caption>{esc(t.title)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}</div>"
    )


def _cell(value: str) -> str:
    # Short cells (numbers, intervals, statuses) never wrap; long ones (keys, paths, reasons) may.
    wrap = "" if len(value) > _NOWRAP_CHARS else ' class="nw"'
    return f"<td{wrap}>{esc(value)}</td>"


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<div class="table-wrap"><table class="kv"><tbody>{body}</tbody></table></div>'


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f'<ul class="notes">{items}</ul>'


def _reproduce(report: Report) -> str:
    repro = report.reproduce
    if repro is None:
        return ""
    how = "rebuilt from the stored config" if repro.reconstructed else "as recorded"
    lines = [f"<p>The command that made this run ({esc(how)}):</p>"]
    commands = "\n".join(display_lines(c) for c in repro.commands)
    lines.append("<pre><code>" + esc(commands) + "</code></pre>")
    lines += [f'<p class="table-note">{esc(n)}</p>' for n in repro.notes]
    lines.append(f'<p class="table-note">this report again: <code>unbottle report {report.run.id}</code></p>')
    return "\n".join(lines)
