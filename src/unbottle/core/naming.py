"""How a message names a setting: as the CLI's flag when the CLI is running, as the field otherwise.

Library configs validate with their field names (``rounds=1 given``); the CLI sets ``SPEAKS_FLAGS`` for
the length of a command, so the same check reads ``--rounds 1 given`` there. Fields whose flag is not
``--`` + the name with dashes pass it as ``flag`` (``opt("time_budget_s", flag="--time-budget")``).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

SPEAKS_FLAGS: ContextVar[bool] = ContextVar("unbottle_speaks_flags", default=False)


def opt(name: str, flag: str | None = None) -> str:
    """The setting ``name`` as the caller knows it: ``--seq-len`` from the CLI, ``seq_len`` from Python."""
    if SPEAKS_FLAGS.get():
        return flag or "--" + name.replace("_", "-")
    return name


def given(name: str, value: Any, flag: str | None = None, *, quote: bool = False) -> str:
    """``--seq-len 0`` from the CLI, ``seq_len=0`` from Python (``quote``: the value's repr); a switch
    turned on is the flag alone (``--compile``)."""
    shown = repr(value) if quote else str(value)
    if SPEAKS_FLAGS.get():
        spelled = opt(name, flag)
        if value is True:
            return spelled  # a switch: --compile, not --compile True
        return f"{spelled}{'' if spelled.endswith('=') else ' '}{shown}"
    return f"{name}={shown}"


def turn_on(name: str, flag: str | None = None) -> str:
    """How to switch a boolean setting on: ``pass --resume`` from the CLI, ``set resume=True`` from Python."""
    if SPEAKS_FLAGS.get():
        return f"pass {opt(name, flag)}"
    return f"set {name}=True"
