"""``unbottle passes`` and ``unbottle apply``: list the optimisation passes, apply them and save."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from unbottle.cli.common import (
    JsonOpt,
    QuietOpt,
    ThreadsOpt,
    err,
    handle_errors,
    out,
    print_json,
)

APPLY_EXAMPLES = """
Examples:

  unbottle apply smollm2-135m --pass wo-int8 -o smol-int8

  unbottle apply smollm2-135m --pass prune-structured:target=mlp,amount=0.2 --pass precision -o smol-small

  unbottle apply tiny-llama --pass wo-int4:group_size=32 --pass compile -o tiny-int4 --overwrite
"""


@handle_errors
def passes(json_: JsonOpt = False) -> None:
    """List every pass: parameters, what it needs, and whether this machine can run it."""
    from unbottle.passes import PASSES, config_class, describe_params

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
    from unbottle.benchmarking import apply_threads
    from unbottle.core.env import manifest
    from unbottle.core.errors import ConfigError, PassError
    from unbottle.models import resolve
    from unbottle.passes import check_composition, parse_pass, unavailable
    from unbottle.passes.recipe import apply_and_save
    from unbottle.reporting import views
    from unbottle.store import Store

    configs = [parse_pass(p) for p in pass_]
    check_composition(configs)
    for c in configs:
        if reasons := unavailable(c):
            raise PassError(f"pass {c.name!r} can't run on this machine: {'; '.join(reasons)}")
    if output.exists() and not overwrite:
        raise ConfigError(
            f"output folder {output} exists; choose another -o or pass --overwrite to replace it"
        )
    source = resolve(model)
    apply_threads(threads)
    if not quiet:
        err.print(f"loading {source.describe()} …", highlight=False)
    loaded = source.load()
    store = Store()
    config = {"model": model, "passes": [c.to_dict() for c in configs], "output": str(output.resolve())}
    with store.recording("apply", model, config, manifest()) as run:
        recipe, _ = apply_and_save(loaded, configs, model, output, overwrite)
        baked = recipe.baked
        result = {
            "output": str(output),
            "reports": recipe.reports,
            "baked": baked,
            "model": loaded.info.to_dict(),
        }
        run.complete(result)
    out.print(views.reports_table(recipe.reports))
    how = (
        "the ONNX Runtime model is saved in onnx/ and opened directly"
        if recipe.onnx
        else f"{baked} pass(es) baked into weights, {len(configs) - baked} re-applied on load"
    )
    out.print(
        f"saved to {output} ({how}); load it with any verb, e.g. `unbottle bench {output}`", highlight=False
    )
    if json_:
        print_json({"run_id": run.id, **result})
