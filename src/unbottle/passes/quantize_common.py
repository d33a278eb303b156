"""What every quantization pass shares: layer selection, exclusion, tied weights, quiet backends.

Each pass picks the ``nn.Linear`` layers it will change the same way (``exclude`` patterns, layers
it can't handle skipped with the reason), and each must not quantize a weight behind the back of
another module that shares it: SmolLM2's ``lm_head`` is tied to the input embedding, and giving
``lm_head`` int8 weights must leave the embedding's float weights alone and the model honest
about the tie being gone.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from unbottle.core.env import cpu_info
from unbottle.core.errors import ConfigError
from unbottle.passes.base import linear_layers, matches

# A layer check: a reason to skip the layer, or None to quantize it.
LayerCheck = Callable[[str, Any], "str | None"]


def as_patterns(value: Any, pass_name: str) -> tuple[str, ...]:
    """``exclude`` as a tuple: accepts a tuple/list of names or one ``"a|b"`` string.

    Raises:
        ConfigError: a value that is neither.
    """
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split("|") if p.strip())
    if isinstance(value, (tuple, list)) and all(isinstance(p, str) for p in value):
        return tuple(value)
    raise ConfigError(
        f"{pass_name} exclude={value!r} given; allowed: module names or glob patterns, "
        "as a tuple or one string 'a|b' (e.g. 'lm_head|model.layers.0.*')"
    )


def check_bool(value: Any, pass_name: str, field: str) -> None:
    """Refuse non-bool values for a bool field (``"yes"`` would otherwise be truthy)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{pass_name} {field}={value!r} given; allowed: true, false")


def check_choice(value: Any, allowed: tuple[Any, ...], pass_name: str, field: str) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{pass_name} {field}={value!r} given; allowed: {', '.join(str(a) for a in allowed)}"
        )


def select_linears(
    model: Any, exclude: tuple[str, ...], check: LayerCheck | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``nn.Linear`` layers to quantize, and the ones left alone with the reason.

    Args:
        model: the model to scan.
        exclude: patterns as understood by ``matches`` (exact name, last component, or glob).
        check: a per-layer test returning a reason to skip it (e.g. a shape the kernel can't take).
    """
    selected: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, module in linear_layers(model).items():
        if exclude and matches(name, exclude):
            skipped[name] = f"excluded (exclude={'|'.join(exclude)})"
        elif is_quantized(module.weight):
            skipped[name] = f"already quantized ({type(module.weight).__name__})"
        elif check is not None and (reason := check(name, module)):
            skipped[name] = reason
        else:
            selected[name] = module
    return selected, skipped


def is_quantized(weight: Any) -> bool:
    """True for a tensor subclass (torchao) or a non-floating weight."""
    return type(weight) not in (torch.Tensor, torch.nn.Parameter) or not weight.is_floating_point()


def untie(model: Any, names: list[str]) -> list[str]:
    """Record that quantizing ``names`` broke weight ties, so nothing re-ties or drops them later.

    Quantizing ``lm_head`` gives it a new weight; a tied embedding keeps its own float weight
    (quantizers here never modify a weight in place). transformers would re-tie on
    ``tie_weights()`` and skip ``lm_head.weight`` on save while the config says the two are tied,
    so the flag is cleared and the tie dropped from ``all_tied_weights_keys``.

    Args:
        model: the model, before the weights of ``names`` are replaced.
        names: qualified names of the modules about to be quantized.

    Returns:
        One note per broken tie (empty when nothing was tied).
    """
    owners: dict[int, list[str]] = {}
    for pname, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(pname)
    chosen = {f"{n}.weight" for n in names}
    notes = []
    for group in owners.values():
        hit, kept = [p for p in group if p in chosen], [p for p in group if p not in chosen]
        if hit and kept:
            notes.append(
                f"{', '.join(hit)} was tied to {', '.join(kept)}; untied: {', '.join(kept)} keeps its "
                "float weights, so the model now stores both"
            )
            _forget_ties(model, set(hit))
    return notes


def _forget_ties(model: Any, params: set[str]) -> None:
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        for target, source in list(tied.items()):
            if target in params or source in params:
                tied.pop(target)


def ao_quantize(module: Any, ao_config: Any) -> None:
    """Apply a torchao config to one Linear, in place (torchao swaps the weight for a subclass)."""
    from torchao.quantization import quantize_

    with quiet():
        quantize_(module, ao_config)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the deprecation chatter of torch.ao and torch's quantized tensors (reported in notes)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_(tensor|channel)")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchao")
        yield


def int8_gemm_note() -> str:
    """Whether this CPU has the int8 dot-product instructions that make int8 GEMMs fast."""
    flags = cpu_info().get("flags", {})
    if flags.get("amx_int8"):
        return "int8 GEMMs use AMX-INT8 on this CPU"
    if flags.get("avx512_vnni") or flags.get("avx_vnni"):
        return "int8 GEMMs use VNNI on this CPU"
    return "this CPU lacks VNNI: int8 GEMMs run, but without the int8 dot-product instructions"


def bf16_note() -> str:
    """Whether activations cast to bf16 for a weight-only kernel run natively on this CPU."""
    flags = cpu_info().get("flags", {})
    if flags.get("avx512_bf16") or flags.get("amx_bf16"):
        return "the kernel computes in bf16 natively on this CPU (AVX512_BF16)"
    return "this CPU lacks AVX512_BF16: the kernel converts bf16 in software and may gain less"
