"""BIG-bench JSON multiple-choice tasks: the packaged ones by name, any other by path.

A task file is checked completely when it is read, so a malformed item fails with its index and
file before any model runs, rather than as a KeyError halfway through an evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from unbottle.core.errors import EvalError
from unbottle.core.registry import Registry

_ROOT = ("tasks", "bigbench")
_FORMAT = (
    'a BIG-bench JSON task: {"examples": [{"input": "...", "target_scores": {"option": 1, "other": 0}}, ...]}'
)


class Item(NamedTuple):
    """One question: its input, its options in file order, and the indices of the correct ones."""

    input: str
    options: tuple[str, ...]
    correct: frozenset[int]


@dataclasses.dataclass(frozen=True)
class Task:
    """A multiple-choice task read from a BIG-bench ``task.json``.

    Attributes:
        name: the packaged name, or the path it was read from.
        path: the file it was read from.
        items: every item, in file order (an item's index is its id).
        task_prefix: text before every prompt (``""`` if the file has none).
        example_input_prefix: text before each input, or None if the file gives none.
        example_output_prefix: text between input and option, or None if the file gives none.
    """

    name: str
    path: str
    items: list[Item]
    task_prefix: str = ""
    example_input_prefix: str | None = None
    example_output_prefix: str | None = None

    def prompt(self, item: Item) -> str:
        """The text every option of ``item`` is scored after."""
        return (
            self.task_prefix
            + (self.example_input_prefix or "")
            + item.input
            + (self.example_output_prefix or "")
        )

    def continuation(self, option: str) -> str:
        """An option as appended to the prompt: directly after an output prefix, else after a space."""
        return option if self.example_output_prefix is not None else " " + option


def _packaged() -> Registry[tuple[str, ...]]:
    # Entries are resource path parts: a plain string would be taken for a lazy "module:attr" entry.
    registry: Registry[tuple[str, ...]] = Registry("task", error=EvalError)
    root = resources.files("unbottle.data").joinpath(*_ROOT)
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((f"{prefix}{entry.name}/", entry))
            elif entry.name == "task.json" and prefix:
                registry.register(prefix.rstrip("/"), (*_ROOT, *prefix.split("/")[:-1], "task.json"))
    return registry


_TASKS = _packaged()
TASKS: tuple[str, ...] = tuple(_TASKS.names())


def load_task(name_or_path: str | Path) -> Task:
    """Read a packaged task by name (see ``TASKS``), or a BIG-bench ``task.json`` file or its folder.

    Raises:
        EvalError: unknown name, missing file, invalid JSON, or a file not in BIG-bench's format
            (no ``examples`` list, an item without ``input``/``target_scores``, fewer than two
            options, no option scored above 0).
    """
    spec = str(name_or_path)
    if spec in _TASKS:
        resource = resources.files("unbottle.data").joinpath(*_TASKS.get(spec))
        return parse_task(resource.read_text(encoding="utf-8"), name=spec, path=str(resource))
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "task.json"
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalError(
                f"cannot read task file {path}: {exc}; give a UTF-8 BIG-bench task.json"
            ) from None
        return parse_task(text, name=spec, path=str(path))
    if any(ch in spec for ch in "/\\~") or spec.endswith(".json") or spec.startswith("."):
        raise EvalError(
            f"no such task file: {str(path)!r}; give a BIG-bench task.json (or its folder), "
            f"or a packaged task: {', '.join(TASKS)}"
        )
    raise EvalError(_TASKS.unknown_message(spec) + "; or give the path of a BIG-bench task.json")


def parse_task(text: str, name: str, path: str) -> Task:
    """Build a ``Task`` from the JSON text of a BIG-bench task file (``path`` names it in errors)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
            f"a task file must be {_FORMAT}"
        ) from None
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not examples:
        raise EvalError(f"{path} has no non-empty 'examples' list; a task file must be {_FORMAT}")
    prefixes = {}
    for key in ("task_prefix", "example_input_prefix", "example_output_prefix"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise EvalError(f"{path}: {key!r} is {type(value).__name__}; it must be a string")
        prefixes[key] = value
    return Task(
        name=name,
        path=path,
        items=[_item(example, i, path) for i, example in enumerate(examples)],
        task_prefix=prefixes["task_prefix"] or "",
        example_input_prefix=prefixes["example_input_prefix"],
        example_output_prefix=prefixes["example_output_prefix"],
    )


def _item(example: Any, index: int, path: str) -> Item:
    where = f"{path}: example {index}"
    if not isinstance(example, dict) or not isinstance(example.get("input"), str):
        raise EvalError(f"{where} has no 'input' string; every example must be like {_FORMAT}")
    scores = example.get("target_scores")
    if not isinstance(scores, dict):
        raise EvalError(
            f"{where} has no 'target_scores' object (free-text 'target' tasks are not multiple choice); "
            f"every example must be like {_FORMAT}"
        )
    if len(scores) < 2:
        raise EvalError(f"{where} has {len(scores)} option(s); a multiple-choice item needs at least two")
    bad = [k for k, v in scores.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad or any(not math.isfinite(v) for v in scores.values()):
        raise EvalError(f"{where}: target scores must be finite numbers (1 correct, 0 wrong); got {scores}")
    if any(option == "" for option in scores):
        raise EvalError(f"{where} has an empty option; every option needs some text to score")
    best = max(scores.values())
    if best <= 0:
        raise EvalError(f"{where} has no correct option (no target score above 0): {scores}")
    options = tuple(scores)
    return Item(example["input"], options, frozenset(i for i, o in enumerate(options) if scores[o] == best))
