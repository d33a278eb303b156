"""Low-rank factorisation: replace a Linear ``W`` (out×in) by two thin ones from a truncated SVD.

``W ≈ U_r S_r V_rᵀ`` becomes ``in → r`` (weight ``√S_r V_rᵀ``) followed by ``r → out`` (weight
``U_r √S_r``, plus the original bias). The two cost ``r·(in+out)`` multiply-adds per token instead
of ``in·out``, so a layer is only factorised when that is smaller. The rank comes from an energy
threshold (keep that fraction of ``Σσ²``) or from a parameter budget. The result is an
``nn.Sequential`` of two Linears, not a standard transformers layout, so it is not saved as weights:
the recipe is re-applied on load (the SVD is deterministic).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from unbottle.core.errors import ConfigError
from unbottle.passes._select import editable_linears, split_patterns
from unbottle.passes.base import Applied, PassConfig, PassContext, conv1d_note, conv1d_to_linear, handler


@dataclasses.dataclass(frozen=True)
class LowRankConfig(PassConfig):
    """Factorise Linear layers where the chosen rank cuts FLOPs.

    Attributes:
        energy: keep the smallest rank whose singular values hold this fraction of ``Σσ²`` (0 < e ≤ 1).
        param_budget: if set, the fraction of each layer's weight parameters to keep (0 < b < 1);
            the rank is ``⌊b·in·out / (in+out)⌋`` and ``energy`` is ignored.
        exclude: module names or patterns to leave alone (``a|b`` on the command line).
    """

    name: ClassVar[str] = "lowrank"
    summary: ClassVar[str] = "truncated-SVD factorisation of Linear layers where it cuts FLOPs"
    saveable: ClassVar[bool] = False
    energy: float = 0.95
    param_budget: float | None = None
    exclude: tuple[str, ...] = ("lm_head",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", split_patterns(self.exclude))
        if not _is_number(self.energy) or not 0 < self.energy <= 1:
            raise ConfigError(
                f"lowrank energy={self.energy!r} given; allowed: 0 < energy ≤ 1 "
                "(the fraction of the squared singular values to keep)"
            )
        if self.param_budget is not None and (
            not _is_number(self.param_budget) or not 0 < self.param_budget < 1
        ):
            raise ConfigError(
                f"lowrank param_budget={self.param_budget!r} given; allowed: none, or 0 < param_budget < 1 "
                "(the fraction of each layer's parameters to keep)"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@handler(LowRankConfig)
def apply_lowrank(model: Any, config: LowRankConfig, context: PassContext) -> Applied:
    converted = conv1d_to_linear(model)
    layers, skipped = editable_linears(model, config.exclude)
    touched: list[str] = []
    ranks: list[int] = []
    macs_before = macs_after = 0
    for name, linear in layers.items():
        out_features, in_features = linear.weight.shape
        rank = _rank(linear.weight, config)
        if rank == 0:
            skipped[name] = "weight is all zeros; nothing to factorise"
            continue
        if rank * (in_features + out_features) >= in_features * out_features:
            skipped[name] = (
                f"rank {rank} would not reduce FLOPs: {rank}·({in_features}+{out_features}) = "
                f"{rank * (in_features + out_features)} ≥ {in_features}·{out_features} = "
                f"{in_features * out_features}"
            )
            continue
        _replace(model, name, _factorised(linear, *_truncated_svd(linear.weight, rank)))
        touched.append(name)
        ranks.append(rank)
        macs_before += in_features * out_features
        macs_after += rank * (in_features + out_features)
    rule = (
        f"param_budget={config.param_budget}"
        if config.param_budget is not None
        else f"energy={config.energy}"
    )
    notes = [
        *conv1d_note(converted),
        f"factorised {len(touched)} of {len(touched) + len(skipped)} Linear layers ({rule})",
    ]
    if touched:
        notes.append(
            f"ranks {min(ranks)}–{max(ranks)}; those layers' multiply-adds per token "
            f"{macs_before} → {macs_after} ({macs_after / macs_before:.3f}×)"
        )
    notes.append("not a standard transformers layout: a saved model re-applies this recipe on load")
    return Applied(model, touched=touched, skipped=skipped, notes=notes)


def _rank(weight: Any, config: LowRankConfig) -> int:
    """The rank the config asks for (0 for an all-zero weight); energy needs only singular values."""
    out_features, in_features = weight.shape
    if not weight.detach().any():
        return 0
    if config.param_budget is not None:
        rank = int(config.param_budget * in_features * out_features // (in_features + out_features))
        return min(max(rank, 1), out_features, in_features)
    energy = torch.linalg.svdvals(weight.detach().double()).pow(2)  # (k,), descending
    kept = energy.cumsum(0) / energy.sum()  # rising to 1
    # tolerance: a cumulative sum of doubles may stop a hair short of exactly 1.0
    rank = int(torch.searchsorted(kept, torch.tensor(config.energy - 1e-12, dtype=kept.dtype))) + 1
    return min(rank, energy.numel())


def _truncated_svd(weight: Any, rank: int) -> tuple[Any, Any]:
    """``(first, second)`` weights ``(r, in)`` and ``(out, r)`` with ``second @ first ≈ weight``."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)  # (out,k) (k,) (k,in)
    root = s[:rank].sqrt()  # split √S between the factors so both have similar scale
    first = root[:, None] * vh[:rank]  # (r, in)
    second = u[:, :rank] * root[None, :]  # (out, r)
    return first.to(weight.dtype), second.to(weight.dtype)


def _factorised(linear: Any, first: Any, second: Any) -> Any:
    """``nn.Sequential(in → r, r → out)``; the bias, if any, goes on the second factor."""
    rank, in_features = first.shape
    device, dtype = linear.weight.device, linear.weight.dtype
    skip_init = torch.nn.utils.skip_init  # the weights are overwritten at once
    down = skip_init(torch.nn.Linear, in_features, rank, bias=False, device=device, dtype=dtype)
    up = skip_init(
        torch.nn.Linear, rank, second.shape[0], bias=linear.bias is not None, device=device, dtype=dtype
    )
    with torch.no_grad():
        down.weight.copy_(first)
        up.weight.copy_(second)
        if linear.bias is not None:
            up.bias.copy_(linear.bias)
    pair = torch.nn.Sequential(down, up)
    pair.requires_grad_(linear.weight.requires_grad)
    return pair


def _replace(model: Any, name: str, module: Any) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)
