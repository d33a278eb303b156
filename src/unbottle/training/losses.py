"""Next-token losses for training, as one module that DDP, FSDP and ``torch.compile`` wrap.

Three ways to the same number:

- ``full``: the model's own forward, then cross-entropy over the (tokens × vocabulary) logits, upcast
  to fp32 (what a plain training loop does).
- ``chunked``: the output layer and the fp32 log-softmax applied per chunk of positions, so the full
  logits never exist at once.
- ``fused``: the output layer, the loss *and its gradient* computed chunk by chunk in the forward pass
  (the loss is the last node of the graph, so its gradient is known there): ``softmax - onehot`` is
  formed in place of the log-probabilities and multiplied straight into the hidden-state and weight
  gradients. No logits are kept for backward, the softmax's exponentials are computed once, and the
  separate log-softmax backward pass disappears. The idea is the one behind Liger-Kernel's fused linear
  cross-entropy; this is a plain-torch version for any device.

``chunked`` and ``fused`` bypass the model's own output layer call; they are checked against ``full`` on
first use and refused for a model whose logits are post-processed (soft-capping, scaling, a bias).
"""

from __future__ import annotations

from typing import Any

import torch

from unbottle.core.errors import ConfigError
from unbottle.core.naming import given

LOSSES = ("full", "chunked", "fused")
LOSS_CHUNK = 256  # positions per chunk


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> Any:
    """Autocast to ``dtype`` on ``device``'s type; a no-op context when ``dtype`` is None."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def next_token_loss(model: Any, batch: Any, dtype: torch.dtype | None = None) -> Any:
    """Mean cross-entropy of predicting ``batch[:, 1:]`` from ``batch[:, :-1]`` (logits upcast to fp32)."""
    with autocast(batch.device, dtype):
        logits = model(input_ids=batch[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Mean CE of ``hidden @ weight.T`` against ``targets``; gradients formed in the forward pass."""

    @staticmethod
    def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, dtype: Any) -> Any:
        n = hidden.shape[0]
        h, w = hidden.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for i in range(0, n, LOSS_CHUNK):
            hc, tc = h[i : i + LOSS_CHUNK], targets[i : i + LOSS_CHUNK]
            rows = torch.arange(tc.shape[0], device=tc.device)
            p = torch.log_softmax((hc @ w.T).float(), dim=-1)
            total -= p[rows, tc].sum()
            p.exp_()[rows, tc] -= 1  # d(loss_sum)/d(logits) = softmax - onehot
            g = p.to(dtype)
            grad_h[i : i + LOSS_CHUNK] = g @ w
            if dtype == torch.float32:
                grad_w.addmm_(g.T, hc)
            else:
                grad_w += (g.T @ hc).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n, ctx.dtypes = n, (hidden.dtype, weight.dtype)
        return total / n

    @staticmethod
    def backward(ctx: Any, grad_out: Any) -> Any:
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return (grad_h * scale).to(ctx.dtypes[0]), (grad_w * scale).to(ctx.dtypes[1]), None, None


class LossModel(torch.nn.Module):
    """``forward(batch)`` → mean next-token loss of ``lm`` on ``batch`` (``mode`` in ``LOSSES``);
    ``dtype`` is the autocast type (None: the weights' own)."""

    def __init__(self, lm: Any, mode: str = "full", dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if mode not in LOSSES:
            raise ConfigError(f"{given('loss', mode, quote=True)} given; allowed: {', '.join(LOSSES)}")
        self.lm, self.mode, self.dtype = lm, mode, dtype
        self.checked = mode == "full"

    def forward(self, batch: Any) -> Any:
        if self.mode == "full":
            return next_token_loss(self.lm, batch, self.dtype)
        head = self.lm.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise ConfigError(
                f"{given('loss', self.mode)} needs an output layer without bias; use {given('loss', 'full')}"
            )
        decoder = getattr(self.lm, self.lm.base_model_prefix)
        with autocast(batch.device, self.dtype):
            hidden = decoder(input_ids=batch[:, :-1]).last_hidden_state.flatten(0, 1)
        targets = batch[:, 1:].flatten()
        if self.mode == "fused" and torch.is_grad_enabled() and hidden.requires_grad:
            compute = self.dtype or head.weight.dtype
            loss = _FusedLinearCrossEntropy.apply(hidden, head.weight, targets, compute)
        else:
            loss = self._chunked(hidden, head, targets, batch.device)
        if not self.checked:
            self._check(batch, loss)
        return loss

    def _chunked(self, hidden: Any, head: Any, targets: Any, device: Any) -> Any:
        total = hidden.new_zeros((), dtype=torch.float32)
        for i in range(0, hidden.shape[0], LOSS_CHUNK):
            with autocast(device, self.dtype):
                logits = head(hidden[i : i + LOSS_CHUNK])
            total = total + torch.nn.functional.cross_entropy(
                logits.float(), targets[i : i + LOSS_CHUNK], reduction="sum"
            )
        return total / hidden.shape[0]

    def _check(self, batch: Any, loss: Any) -> None:
        with torch.no_grad():
            full = float(next_token_loss(self.lm, batch, self.dtype))
        got = float(loss.detach())
        if abs(got - full) > 1e-3 * abs(full):
            raise ConfigError(
                f"{given('loss', self.mode)} gives {got:.5f} where the model's own forward gives {full:.5f}: "
                f"this architecture post-processes its logits; use {given('loss', 'full')}"
            )
        self.checked = True
