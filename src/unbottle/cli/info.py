"""``unbottle models`` and ``unbottle env``: what can be loaded, and what machine this is."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from unbottle.cli.common import handle_errors, out, print_json
from unbottle.core.env import manifest
from unbottle.sources import MODELS


@handle_errors
def models(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON as the last stdout line.")] = False,
) -> None:
    """List the known model names; any HF model folder or .gguf file path works too."""
    table = Table(title="known models (or give a model folder / .gguf path)", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("what it is")
    for name in MODELS:
        table.add_row(name, MODELS.help(name))
    out.print(table)
    if json_:
        print_json([{"name": n, "help": MODELS.help(n)} for n in MODELS])


@handle_errors
def env(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON as the last stdout line.")] = False,
) -> None:
    """Print the environment manifest stored with every run."""
    doc = manifest()
    cpu = doc["cpu"]
    flags = ", ".join(k for k, v in cpu.get("flags", {}).items() if v) or "unknown"
    libs = ", ".join(f"{k} {v}" for k, v in doc["libraries"].items() if v)
    table = Table(show_header=False, title="environment", title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in [
        ("cpu", cpu.get("model")),
        ("cpu flags", flags),
        ("torch capability", cpu.get("torch_capability")),
        ("cores", f"{doc['cores']['physical']} physical, {doc['cores']['logical']} logical"),
        ("memory", f"{doc['memory_total_mib']:.0f} MiB"),
        ("gpus", doc["gpus"] or "none"),
        ("os", " ".join(str(x) for x in doc["os"].values())),
        ("python", doc["python"]["version"]),
        ("libraries", libs),
        ("threads", doc["threads"]),
        ("unbottle", doc["unbottle"]),
    ]:
        table.add_row(k, str(v))
    out.print(table)
    if json_:
        print_json(doc)
