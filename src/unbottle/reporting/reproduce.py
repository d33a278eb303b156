"""The exact command that made a run, so a reader of a report can make it again.

The store keeps each run's command line (``argv``) as it was typed. When it is missing (older runs,
runs started from Python rather than the ``unbottle`` command), the command is rebuilt from the stored
config, flag by flag, and the report says it was reconstructed; config fields no flag can set are named
when they differ from their defaults, so nothing is silently lost.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Config types whose defaults tell which unflagged fields were changed ("module:attr", imported lazily).
_CONFIG_TYPES = {
    "BenchConfig": "unbottle.benchmarking.config:BenchConfig",
    "EvalConfig": "unbottle.evaluation.config:EvalConfig",
    "ABConfig": "unbottle.comparison.ab:ABConfig",
    "OptimizeConfig": "unbottle.optimizer.config:OptimizeConfig",
    "ProfileConfig": "unbottle.profiling.run:ProfileConfig",
}
# Entry points that mean "the unbottle command": the console script and ``python -m unbottle.cli``.
# Kinds whose stored config holds every setting, so the rebuilt command is the same run.
_SPELLED_OUT = ("bench", "ab", "optimize", "profile")
_CLI_SUFFIXES = ("unbottle", "unbottle/cli/__main__.py", "unbottle/__main__.py", "unbottle.cli")


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """How to make a run again.

    Attributes:
        commands: shell lines, the run's own command first, then follow-up checks.
        reconstructed: the first command was rebuilt from the stored config, not recorded.
        notes: what a reader should know: where it ran, the source commit, fields no flag sets.
    """

    commands: tuple[str, ...]
    reconstructed: bool
    notes: tuple[str, ...]


def reproduction(run: Any) -> Reproduction:
    """The command lines that reproduce ``run`` (a ``RunRecord``), recorded or rebuilt."""
    notes: list[str] = []
    args = cli_args(run.argv)
    reconstructed = args is None
    if args is None:
        args, unflagged = rebuild_args(run.kind, run.model, run.config or {})
        notes.append(
            "reconstructed from the stored config: the command line was not recorded for this run"
            + (f"; set outside any flag: {', '.join(unflagged)}" if unflagged else "")
        )
    env = _thread_env(run.manifest or {})
    commands = [shlex.join([*env, "unbottle", *args])]
    if not reconstructed and run.kind in _SPELLED_OUT:
        full, unflagged = rebuild_args(run.kind, run.model, run.config or {})
        if not unflagged and full != args:
            commands += ["# the same, with every setting spelled out:", shlex.join([*env, "unbottle", *full])]
    commands += _follow_ups(run)
    notes += _where(run.manifest or {})
    return Reproduction(tuple(commands), reconstructed, tuple(notes))


def display_lines(command: str, width: int = 96) -> str:
    """A long shell command split before its options with ``\\`` continuations (still one command)."""
    if len(command) <= width or command.lstrip().startswith("#"):
        return command
    groups: list[list[str]] = [[]]
    for token in shlex.split(command):
        if token.startswith("-") and groups[-1]:
            groups.append([])
        groups[-1].append(shlex.quote(token))
    lines = [" ".join(groups[0])]
    for group in groups[1:]:
        text = " ".join(group)
        if len(lines[-1]) + 1 + len(text) > width:
            lines.append("    " + text)
        else:
            lines[-1] += " " + text
    return " \\\n".join(lines)


def cli_args(argv: list[str] | None) -> list[str] | None:
    """The arguments after ``unbottle`` in a recorded argv; None if it was not the unbottle command."""
    if not argv:
        return None
    program = str(argv[0]).replace("\\", "/")
    if not (Path(program).name == "unbottle" or program.endswith(_CLI_SUFFIXES[1:])):
        return None
    return [str(a) for a in argv[1:]]


def rebuild_args(kind: str, model: str, config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Command arguments rebuilt from a stored config, and the changed fields no flag covers."""
    builder = _BUILDERS.get(kind)
    if builder is None:
        return [kind, model], sorted(k for k in config if k not in ("type", "version"))
    return builder(model, config)


def _flags(config: dict[str, Any], spec: dict[str, str]) -> list[str]:
    """``--flag value`` for each ``config`` key in ``spec``; lists comma-joined, booleans as switches."""
    args: list[str] = []
    for key, flag in spec.items():
        value = config.get(key)
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, _number(value)]
    return args


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _unflagged(config: dict[str, Any], covered: set[str]) -> list[str]:
    """Fields of a typed config outside ``covered`` whose stored value differs from the default."""
    path = _CONFIG_TYPES.get(str(config.get("type")))
    if path is None:
        return []
    module, attr = path.split(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return []
    changed = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = list(default)
        if f.name not in covered and f.name in config and config[f.name] != default:
            changed.append(f"{f.name}={config[f.name]}")
    return changed


_BENCH = {
    "scenarios": "--scenarios", "prompt_lengths": "--prompt-lengths", "batch_sizes": "--batch-sizes",
    "new_tokens": "--new-tokens", "decode_prompt_length": "--decode-prompt-length", "threads": "--threads",
    "min_time_s": "--min-time", "min_repeats": "--min-repeats", "warmup": "--warmup", "device": "--device",
    "seed": "--seed",
}  # fmt: skip
_EVAL = {
    "eval_text": "--eval-text", "eval_tokens": "--eval-tokens", "window": "--window", "stride": "--stride",
    "task": "--task", "max_items": "--max-items", "length_normalize": "--length-normalize",
    "reference": "--reference", "batch_size": "--batch-size",
}  # fmt: skip
_AB = {
    "scenario": "--scenario", "rounds": "--rounds", "repeats_per_round": "--repeats-per-round",
    "batch_size": "--batch-size", "prompt_length": "--prompt-length", "new_tokens": "--new-tokens",
    "threads": "--threads",
}  # fmt: skip
_AB_EVAL = {
    "eval_text": "--eval-text",
    "eval_tokens": "--eval-tokens",
    "task": "--task",
    "max_items": "--max-items",
}
_OPTIMIZE = {
    "objective": "--objective", "max_trials": "--max-trials", "task": "--task",
    "eval_tokens": "--eval-tokens", "batch_size": "--batch-size", "threads": "--threads",
    "memory_limit_mib": "--memory-limit", "eval_text": "--eval-text",
}  # fmt: skip
_PROFILE = {
    "prompt_length": "--prompt-length", "decode_tokens": "--decode-tokens", "threads": "--threads",
    "trace_dir": "--trace", "refresh_peaks": "--refresh-peaks", "device": "--device",
}  # fmt: skip
_TRAIN = {"data": "--data", "seq_len": "--seq-len", "data_mode": "--data-mode", "output": "--output"}
_TRAIN_STEPS = {
    "max_steps": "--max-steps", "grad_accum": "--grad-accum", "lr": "--lr", "precision": "--precision",
    "loss": "--loss", "eval_every": "--eval-every", "checkpoint_every": "--checkpoint-every",
}  # fmt: skip
_TRAIN_LOADER = {"batch_size": "--batch-size", "workers": "--workers"}


def _bench(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    return ["bench", model, *_flags(c, _BENCH)], _unflagged(c, set(_BENCH))


def _eval(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    return ["eval", model, *_flags(c, _EVAL)], _unflagged(c, set(_EVAL))


def _ab(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    ab = c.get("ab") or {}
    args = ["ab", str(c.get("model_a", model)), str(c.get("model_b", model)), *_flags(ab, _AB)]
    if c.get("eval"):
        args += ["--eval", *_flags(c["eval"], _AB_EVAL)]
    args += _goal_flags(c.get("goals"))
    return args, _unflagged(ab, set(_AB))


def _compare(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    runs = [str(r) for r in c.get("runs") or ["A", "B"]]
    return ["compare", *runs, *_goal_flags(c.get("goals"))], []


def _optimize(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    args = ["optimize", str(c.get("model", model)), *_flags(c, _OPTIMIZE)]
    args += _goal_flags(c.get("goals"))
    for cand in c.get("candidates") or []:
        args += ["--candidate", str(cand)]
    if c.get("time_budget_s") is not None:
        args += ["--time-budget", f"{float(c['time_budget_s']):g}s"]
    if c.get("output"):
        args += ["--output", str(c["output"])]
    covered = set(_OPTIMIZE) | {"model", "goals", "candidates", "time_budget_s", "output", "search_key"}
    return args, _unflagged(c, covered)


def _profile(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    return ["profile", model, *_flags(c, _PROFILE)], _unflagged(c, set(_PROFILE))


def _train(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    args = ["train", str(c.get("model", model)), *_flags(c, _TRAIN)]
    if c.get("compare"):
        spec = {"compare": "--compare", "rounds": "--rounds", "segment_steps": "--segment-steps"}
        return args + _flags(c, spec), []
    args += _flags(c.get("train") or {}, _TRAIN_STEPS) + _flags(c.get("loader") or {}, _TRAIN_LOADER)
    return args, []


def _goal_flags(goals: list[Any] | None) -> list[str]:
    args: list[str] = []
    for g in goals or []:
        text = g if isinstance(g, str) else f"{g['metric']}:{g['kind']}={_number(float(g['value']))}"
        args += ["--goal", text]
    return args


_BUILDERS: dict[str, Callable[[str, dict[str, Any]], tuple[list[str], list[str]]]] = {
    "bench": _bench,
    "eval": _eval,
    "ab": _ab,
    "compare": _compare,
    "optimize": _optimize,
    "profile": _profile,
    "train": _train,
}


def _thread_env(manifest: dict[str, Any]) -> list[str]:
    """``NAME=value`` for each threading variable that was set when the run was made."""
    threads = manifest.get("threads") or {}
    return [f"{k}={v}" for k, v in threads.items() if k.isupper() and v is not None]


def _follow_ups(run: Any) -> list[str]:
    """Checks worth running after the run itself, e.g. an independent A/B of a saved optimisation."""
    if run.kind != "optimize":
        return []
    output = ((run.result or {}).get("optimize") or {}).get("output")
    if not output:
        return []
    model = str((run.config or {}).get("model", run.model))
    return [
        "# check the saved model independently:",
        shlex.join(["unbottle", "ab", model, output, "--eval"]),
        shlex.join(["unbottle", "eval", output]),
    ]


def _where(manifest: dict[str, Any]) -> list[str]:
    notes = []
    if manifest.get("working_dir"):
        notes.append(f"run from {manifest['working_dir']} (relative paths are relative to it)")
    source = manifest.get("unbottle") or {}
    if source.get("version"):
        commit = source.get("git_commit")
        state = {True: ", with uncommitted changes", False: ""}.get(source.get("git_dirty"), "")
        at = f" at git commit {commit}{state}" if commit else ""
        notes.append(f"made by unbottle {source['version']}{at}")
    return notes
