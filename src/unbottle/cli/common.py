"""What every verb shares: consoles, clean error exits, list parsing, the JSON last line."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from unbottle.core.errors import ConfigError, UnbottleError
from unbottle.reporting.progress import err

# Off a terminal (pipes, CI logs) rich assumes 80 columns and truncates tables; logs take wider lines.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)

F = TypeVar("F", bound=Callable[..., Any])

# Options every verb spells the same way.
ThreadsOpt = Annotated[int | None, typer.Option(help="torch threads [default: physical cores].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document as the last stdout line.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
AllowPickleOpt = Annotated[bool, typer.Option(help="Load pickle checkpoints (weights_only=True).")]
GoalOpt = Annotated[
    list[str] | None, typer.Option(help="METRIC:KIND=VALUE, e.g. perplexity:percent-max-degradation=1.")
]
FailOnRegressionOpt = Annotated[bool, typer.Option(help="Exit 1 if a goal fails or a metric is worse.")]


def exit_on_regression(doc: dict[str, Any], fail_on_regression: bool) -> None:
    """With ``--fail-on-regression``: exit 1 when a goal failed or a metric got worse."""
    if fail_on_regression and (doc["overall"] == "fail" or doc["regressions"]):
        err.print(f"regression: overall {doc['overall']}; worse: {', '.join(doc['regressions']) or '-'}")
        raise typer.Exit(1)


def handle_errors(fn: F) -> F:
    """Turn expected failures into one ``error:`` line on stderr and exit code 2 (130 on Ctrl-C)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UnbottleError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; everything measured so far is in the store")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def int_list(flag: str, text: str) -> tuple[int, ...]:
    """Parse ``"32,512"``; anything else is a ConfigError naming the flag."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} given; allowed: comma-separated positive integers, e.g. 32,512"
        ) from None
    return values


def float_list(flag: str, text: str) -> tuple[float, ...]:
    """Parse ``"1,2.5,4"``; anything else is a ConfigError naming the flag."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r} given; allowed: comma-separated numbers, e.g. 1,2,4") from None


def str_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def print_json(document: Any) -> None:
    """One JSON document on one line: always the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(document, default=str, allow_nan=False), flush=True)


def quiet_saves(quiet: bool) -> None:
    """With ``--quiet``, silence transformers' own progress bars (e.g. "Writing model shards")."""
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def stderr_say(quiet: bool) -> Callable[[str], None]:
    """A one-line status printer on stderr, or a no-op with ``--quiet``."""
    if quiet:
        return lambda _m: None
    return lambda m: err.print(m, highlight=False)


class StatusLines:
    """The progress of a verb that only says what it is doing (``message``): plain lines on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.message = stderr_say(quiet)
