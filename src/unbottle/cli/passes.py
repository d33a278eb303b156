"""``unbottle passes`` and ``unbottle apply``: list the optimisation passes, apply them and save."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from unbottle.api.transform import apply as run_apply
from unbottle.cli.common import (
    JsonOpt,
    QuietOpt,
    StatusLines,
    ThreadsOpt,
    handle_errors,
    out,
    print_json,
)
from unbottle.passes import PASSES, config_class, describe_params
from unbottle.passes.recipe import read_recipe
from unbottle.reporting import views

APPLY_EXAMPLES = """
Examples:

  unbottle apply smollm2-135m --pass wo-int8 -o smol-int8

  unbottle apply smollm2-135m --pass prune-structured:target=mlp,amount=0.2 --pass precision -o smol-small

  unbottle apply tiny-llama --pass wo-int4:group_size=32 --pass compile -o tiny-int4 --overwrite
"""


@handle_errors
def passes(json_: JsonOpt = False) -> None:
    """List every pass: parameters, what it needs, and whether this machine can run it."""
    table = Table(
        title="optimisation passes (--pass NAME:key=value,...)",
        title_justify="left",
        header_style="bold",
        show_lines=True,
    )
    for col in ("pass", "stage", "what it does", "parameters (default)", "needs", "available here"):
        table.add_column(col)
    rows = []
    for name in PASSES:
        try:
            cls = config_class(name)
            reasons = cls().missing()
            row = {
                "name": name,
                "stage": cls.stage,
                "summary": cls.summary,
                "params": describe_params(cls),
                "needs": cls.requires.describe(),
                "available": not reasons,
                "why_not": reasons,
            }
        except Exception as exc:  # a backend that fails to import is reported, not fatal
            row = {
                "name": name,
                "stage": "?",
                "summary": "",
                "params": "",
                "needs": "",
                "available": False,
                "why_not": [f"cannot import: {type(exc).__name__}: {exc}"],
            }
        rows.append(row)
        table.add_row(
            name,
            row["stage"],
            row["summary"],
            row["params"],
            row["needs"],
            "yes" if row["available"] else "no: " + "; ".join(row["why_not"]),
        )
    out.print(table)
    if json_:
        print_json(rows)


@handle_errors
def apply(
    model: Annotated[str, typer.Argument(help="Model name, HF folder, .gguf file or recipe folder.")],
    pass_: Annotated[list[str], typer.Option("--pass", "-p", help="NAME[:key=value,...]; repeat, in order.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (model + recipe).")],
    overwrite: Annotated[bool, typer.Option(help="Replace the output folder if it exists.")] = False,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Apply passes in order and save the result with its recipe (loadable by every verb)."""
    doc = run_apply(model, pass_, output, overwrite=overwrite, threads=threads, progress=StatusLines(quiet))
    out.print(views.reports_table(doc["reports"]))
    how = (
        "the ONNX Runtime model is saved in onnx/ and opened directly"
        if read_recipe(output).onnx
        else f"{doc['baked']} pass(es) baked into weights, {len(pass_) - doc['baked']} re-applied on load"
    )
    out.print(
        f"saved to {output} ({how}); load it with any verb, e.g. `unbottle bench {output}`", highlight=False
    )
    if json_:
        print_json(doc)
