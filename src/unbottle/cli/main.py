"""The ``unbottle`` entry point: registers each verb's module on one typer app."""

from __future__ import annotations

import sys

import typer

from unbottle import __version__
from unbottle.cli import (
    ab,
    bench,
    compare,
    distill,
    info,
    optimize,
    passes,
    profile,
    report,
    runs,
    serve,
    train,
)
from unbottle.cli import eval as eval_cli
from unbottle.core.naming import SPEAKS_FLAGS
from unbottle.store import COMMAND_LINE

app = typer.Typer(
    name="unbottle",
    help="Find and remove the performance bottlenecks of transformer models, verified by A/B tests.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command("optimize", epilog=optimize.EXAMPLES)(optimize.optimize)
app.command("profile", epilog=profile.EXAMPLES)(profile.profile)
app.command("train", epilog=train.EXAMPLES)(train.train)
app.command("distill", epilog=distill.EXAMPLES)(distill.distill)
app.command("bench", epilog=bench.EXAMPLES)(bench.bench)
app.command("eval", epilog=eval_cli.EXAMPLES)(eval_cli.eval_)
app.command("ab", epilog=ab.EXAMPLES)(ab.ab)
app.command("compare", epilog=compare.EXAMPLES)(compare.compare)
app.command("serve", epilog=serve.EXAMPLES)(serve.serve)
app.command("report", epilog=report.EXAMPLES)(report.report)
app.command("apply", epilog=passes.APPLY_EXAMPLES)(passes.apply)
app.command("passes")(passes.passes)
app.command("models")(info.models)
app.command("env")(info.env)
app.add_typer(runs.app, name="runs")


def _version(value: bool) -> None:
    if value:
        print(f"unbottle {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print version."),
) -> None:
    """unbottle: profile → diagnose → apply → verify → report."""

    # every run this command records keeps the line that made it; forgotten when the command ends, so
    # a run started later from Python in the same process (a notebook, a test) is not credited to it
    token = COMMAND_LINE.set(list(sys.argv))
    ctx.call_on_close(lambda: COMMAND_LINE.reset(token))
    # while a command runs, errors name settings by their flags (--rounds), not their fields (rounds)
    flags = SPEAKS_FLAGS.set(True)
    ctx.call_on_close(lambda: SPEAKS_FLAGS.reset(flags))
