"""What a pass is: a versioned config, a registered handler, declared needs, and a report.

A pass config is a frozen dataclass (validated on construction, JSON round-trippable) whose class
declares the pass's name, the stage it runs in, what it needs from the machine, and whether its
result can be saved as plain weights. A handler registered for the config class does the work and
says what it changed; layers it can't handle are skipped and listed, never fatal.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from unbottle.core.config import Config
from unbottle.core.env import cpu_info

Stage = Literal["torch", "compile", "export", "runtime"]
STAGE_ORDER: dict[str, int] = {"torch": 0, "compile": 1, "export": 2, "runtime": 3}


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What a pass needs; ``missing`` says, in words, what this machine lacks.

    Attributes:
        cpu_flags: CPU flags that must all be present (names as in ``unbottle env``, e.g. avx512_vnni).
        gpu: needs a CUDA device.
        packages: importable modules that must be installed (e.g. ``torchao``).
        calibration: needs calibration data (the caller provides token batches).
    """

    cpu_flags: tuple[str, ...] = ()
    gpu: bool = False
    packages: tuple[str, ...] = ()
    calibration: bool = False

    def missing(self) -> list[str]:
        reasons = []
        flags = cpu_info().get("flags", {})
        reasons += [f"this CPU lacks {f.upper()}" for f in self.cpu_flags if not flags.get(f)]
        if self.gpu and not torch.cuda.is_available():
            reasons.append("needs a CUDA GPU; none is visible")
        for pkg in self.packages:
            if importlib.util.find_spec(pkg) is None:
                reasons.append(
                    f"needs the package {pkg!r}; install it with `pip install {_PIP.get(pkg, pkg)}`"
                )
        return reasons

    def describe(self) -> str:
        parts = [
            *(f.upper() for f in self.cpu_flags),
            *(["GPU"] if self.gpu else []),
            *self.packages,
            *(["calibration data"] if self.calibration else []),
        ]
        return ", ".join(parts) or "-"


_PIP = {
    "torchao": "torchao",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime_genai": "onnxruntime-genai",
}


@dataclasses.dataclass(frozen=True)
class PassConfig(Config):
    """Base of every pass config. Subclasses set the class attributes and add fields."""

    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = "torch"
    summary: ClassVar[str] = ""
    requires: ClassVar[Requirements] = Requirements()
    # True when the result is a plain transformers model whose weights save_pretrained can write;
    # False means the recipe is re-applied on load (e.g. tensor subclasses, compiled graphs).
    saveable: ClassVar[bool] = True
    # False when the result is something ONNX export can't trace (quantized tensor subclasses, bf16):
    # such a pass may not precede the onnx pass, whose own quantizers do that job.
    exportable: ClassVar[bool] = True

    def missing(self) -> list[str]:
        """What this machine lacks for this config (override when it depends on field values)."""
        return type(self).requires.missing()

    def unsupported(self, model: Any) -> str | None:
        """Why this pass can't handle ``model``'s architecture, or None when it can.

        Checked for every pass of a recipe before any runs (override where a family is refused), so
        a refusal costs no export, calibration or earlier pass. Layers a pass can't handle inside a
        model it supports are skipped and reported by its handler instead.
        """
        return None

    def label(self) -> str:
        """``name:key=value,...`` with only the fields that differ from their defaults."""
        fields = [f for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
        args = ",".join(f"{f.name}={_text(getattr(self, f.name))}" for f in fields)
        return f"{self.name}:{args}" if args else self.name


def _text(value: Any) -> str:
    return "|".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


@dataclasses.dataclass
class PassReport:
    """What one pass changed.

    Attributes:
        name: the pass name; config: its config as a dict (with version).
        touched: modules changed; skipped: modules left alone, with the reason.
        params_before / params_after: unique parameters (quantized weights count their elements).
        bytes_before / bytes_after: bytes of all parameters and buffers (packed formats counted as stored).
        seconds: wall time of the pass; notes: anything the user should know.
    """

    name: str
    config: dict[str, Any]
    touched: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PassContext:
    """What a handler may use besides the model: tokenizer, calibration batches, a seed, the file the
    model was loaded from (``source``: a .gguf file's path, for passes that read its blocks), and what
    the loaded model is (``task``; ``head``: whether its checkpoint carried the task's head)."""

    tokenizer: Any = None
    calibration: Callable[[], list[Any]] | None = None
    seed: int = 0
    source: Path | None = None
    task: str = "causal-lm"
    head: bool = True


@dataclasses.dataclass
class Applied:
    """A handler's result: the (possibly new) model and what it touched or skipped."""

    model: Any
    touched: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


Handler = Callable[[Any, Any, PassContext], Applied]
HANDLERS: dict[type, Handler] = {}


def handler(config_cls: type[PassConfig]) -> Callable[[Handler], Handler]:
    """Register the function that applies ``config_cls``."""

    def wrap(fn: Handler) -> Handler:
        HANDLERS[config_cls] = fn
        return fn

    return wrap


def matches(module_name: str, patterns: tuple[str, ...]) -> bool:
    """True when a module name matches a pattern: exact, last component, or fnmatch glob.

    ``lm_head`` matches ``lm_head``; ``o_proj`` matches every ``...self_attn.o_proj``;
    ``model.layers.0.*`` matches everything in layer 0.
    """
    last = module_name.rsplit(".", 1)[-1]
    return any(module_name == p or last == p or fnmatch.fnmatchcase(module_name, p) for p in patterns)


def linear_layers(model: Any) -> dict[str, Any]:
    """Every ``nn.Linear`` by qualified name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def model_type(model: Any) -> str:
    """The transformers ``model_type`` of ``model`` (``gemma3_text``, ``gpt2``, ...), or its class name."""
    return str(getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__)


def conv1d_layers(model: Any) -> dict[str, Any]:
    """transformers' ``Conv1D`` modules by name: GPT-2's linear layers, weight stored ``(in, out)``."""
    from transformers.pytorch_utils import Conv1D

    return {n: m for n, m in model.named_modules() if isinstance(m, Conv1D)}


def conv1d_to_linear(model: Any) -> list[str]:
    """Replace every ``Conv1D`` by the ``nn.Linear`` computing the same, in place; return their names.

    The passes that rewrite ``nn.Linear`` (quantizers, low rank) then handle GPT-2 like any other
    model. The result no longer matches GPT-2's checkpoint layout, so only passes re-applied on load
    (not saved as weights) call this.
    """
    names = list(conv1d_layers(model))
    for name in names:
        conv = model.get_submodule(name)
        weight = conv.weight  # (in, out)
        linear = torch.nn.utils.skip_init(
            torch.nn.Linear, weight.shape[0], weight.shape[1], device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            linear.weight.copy_(weight.t())  # (out, in)
            linear.bias.copy_(conv.bias)
        linear.requires_grad_(weight.requires_grad)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, linear)
    return names


def conv1d_note(names: list[str]) -> list[str]:
    """The report note for ``conv1d_to_linear``'s result (empty when nothing was converted)."""
    if not names:
        return []
    return [f"{len(names)} Conv1D layers (GPT-2 style, weight stored in×out) rebuilt as equivalent nn.Linear"]
