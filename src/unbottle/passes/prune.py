"""Unstructured magnitude pruning: zero the smallest weights of each Linear (or of all of them).

The zeros are written into the weights themselves (no masks, no reparametrisation), so the result
is a plain transformers model that saves as ordinary weights. It makes the model *sparser*, not
faster: dense CPU kernels multiply the zeros like any other number. Its uses are a sparse or
compressed backend downstream, and the 2:4 pattern, which NVIDIA Ampere+ GPUs run on sparse tensor
cores (``torch.sparse.to_sparse_semi_structured``). ``prune-structured`` is the pass that shrinks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch

from unbottle.core.errors import ConfigError
from unbottle.passes._select import editable_linears, split_patterns
from unbottle.passes.base import Applied, PassConfig, PassContext, handler

SCOPES = ("global", "layer")
PATTERNS = ("unstructured", "2:4")


@dataclasses.dataclass(frozen=True)
class MagnitudePruneConfig(PassConfig):
    """Zero the ``sparsity`` fraction of smallest-magnitude Linear weights.

    Attributes:
        sparsity: fraction of weights set to zero, 0 < sparsity < 1 (fixed at 0.5 for ``2:4``).
        scope: ``layer`` prunes each layer to ``sparsity``; ``global`` ranks all weights together,
            so layers with small weights lose more.
        pattern: ``unstructured`` (any weight) or ``2:4`` (2 of every 4 consecutive input weights).
        exclude: module names or patterns to leave dense (``a|b`` on the command line).
    """

    name: ClassVar[str] = "prune"
    summary: ClassVar[str] = "magnitude pruning of Linear weights (unstructured or 2:4); sparser, not faster"
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "layer"
    pattern: Literal["unstructured", "2:4"] = "unstructured"
    exclude: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", split_patterns(self.exclude))
        if self.scope not in SCOPES:
            raise ConfigError(f"prune scope {self.scope!r} given; allowed: {', '.join(SCOPES)}")
        if self.pattern not in PATTERNS:
            raise ConfigError(f"prune pattern {self.pattern!r} given; allowed: {', '.join(PATTERNS)}")
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, int | float):
            raise ConfigError(
                f"prune sparsity {self.sparsity!r} given; allowed: a number with 0 < sparsity < 1"
            )
        if not 0 < self.sparsity < 1:
            raise ConfigError(
                f"prune sparsity={self.sparsity} given; allowed: 0 < sparsity < 1 (the fraction zeroed)"
            )
        if self.pattern == "2:4" and self.sparsity != 0.5:
            raise ConfigError(
                f"prune pattern=2:4 zeroes exactly 2 of every 4 weights, so sparsity is 0.5; "
                f"sparsity={self.sparsity} given: drop it or use pattern=unstructured"
            )
        if self.pattern == "2:4" and self.scope == "global":
            raise ConfigError(
                "prune pattern=2:4 works group by group, so scope=global has no meaning; use scope=layer"
            )


@handler(MagnitudePruneConfig)
def apply_prune(model: Any, config: MagnitudePruneConfig, context: PassContext) -> Applied:
    layers, skipped = editable_linears(model, config.exclude)
    if config.pattern == "2:4":
        for name, module in list(layers.items()):
            in_features = _out_in(module).shape[1]
            if in_features % 4:
                skipped[name] = f"in_features={in_features} is not a multiple of 4, so 2:4 groups don't fit"
                del layers[name]
    weights = [m.weight for m in layers.values()]
    with torch.no_grad():
        if config.pattern == "2:4":
            for m in layers.values():
                _prune_2_4(_out_in(m))
        elif config.scope == "global":
            _prune_smallest(weights, config.sparsity)
        else:
            for w in weights:
                _prune_smallest([w], config.sparsity)
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    notes = [
        f"{zeros / max(total, 1):.4f} of the weights of {len(weights)} Linear layers are now zero "
        f"({config.pattern}, scope={config.scope})",
        "unstructured sparsity does not speed up dense CPU kernels: the zeros are multiplied like any "
        "other weight; use prune-structured to make the model smaller and faster",
    ]
    if config.pattern == "2:4":
        notes[1] = (
            "2:4 sparsity is accelerated by sparse tensor cores on NVIDIA Ampere+ GPUs, not by CPU kernels"
        )
    return Applied(model, touched=list(layers), skipped=skipped, notes=notes)


def _prune_smallest(weights: list[Any], sparsity: float) -> None:
    """Zero exactly ``round(sparsity * N)`` of the ``N`` weights across all tensors, smallest first.

    A k-th value threshold (linear time, unlike a sort); entries equal to it are zeroed in order
    until the count is exact, so ties (e.g. weights already zero) do not change the count.
    """
    if not weights:
        return
    magnitudes = torch.cat([w.detach().abs().reshape(-1).float() for w in weights])  # (N,)
    k = round(sparsity * magnitudes.numel())
    if k <= 0:
        return
    threshold = torch.kthvalue(magnitudes, k).values
    still = k - int((magnitudes < threshold).sum())  # entries equal to the threshold still to zero
    del magnitudes
    for w in weights:
        mag = w.abs().float()
        w[mag < threshold] = 0
        if still > 0:
            ties = torch.nonzero((mag == threshold).view(-1)).view(-1)[:still]
            w.view(-1)[ties] = 0
            still -= ties.numel()


def _out_in(module: Any) -> Any:
    """The weight as an ``(out, in)`` view: an ``nn.Linear``'s own, a GPT-2 ``Conv1D``'s transposed."""
    return module.weight if isinstance(module, torch.nn.Linear) else module.weight.t()


def _prune_2_4(weight: Any) -> None:
    """In every group of 4 consecutive input weights of each row, zero the 2 smallest magnitudes.

    ``weight`` is ``(out, in)``, possibly a transposed view; it is written in place.
    """
    out_features, in_features = weight.shape
    groups = weight.reshape(out_features, in_features // 4, 4)  # (out, in/4, 4); a copy for a view
    smallest = groups.abs().topk(2, dim=-1, largest=False).indices  # (out, in/4, 2)
    groups.scatter_(-1, smallest, 0)
    weight.copy_(groups.reshape(out_features, in_features))
