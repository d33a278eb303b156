"""What every verb shares: consoles, clean error exits, list parsing, the JSON last line."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from unbottle.core.errors import ConfigError, UnbottleError

# Off a terminal (pipes, CI logs) rich assumes 80 columns and truncates tables; logs take wider lines.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


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


def str_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def print_json(document: Any) -> None:
    """One JSON document on one line: always the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(document, default=str, allow_nan=False), flush=True)
