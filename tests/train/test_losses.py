"""The fused linear cross-entropy gives the full loss's value and gradients, in fp32 and bf16."""

from __future__ import annotations

import pytest
import torch

from unbottle.core.errors import ConfigError
from unbottle.models import load
from unbottle.training.losses import LOSS_CHUNK, LossModel


def _grads(model, mode, batch, dtype=None):
    model.zero_grad(set_to_none=True)
    loss = LossModel(model, mode, dtype)(batch)
    loss.backward()
    return float(loss.detach()), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_loss_matches_the_full_loss_and_its_gradients(dtype):
    torch.manual_seed(0)
    model = load("tiny-llama").model
    vocab = model.config.vocab_size
    batch = torch.randint(0, vocab, (3, LOSS_CHUNK // 2 + 7))  # more positions than one chunk
    full, g_full = _grads(model, "full", batch, dtype)
    fused, g_fused = _grads(model, "fused", batch, dtype)
    tol = 1e-5 if dtype is None else 2e-2
    assert fused == pytest.approx(full, rel=tol)
    assert g_fused.keys() == g_full.keys()
    for name, g in g_full.items():
        err = (g_fused[name] - g).norm() / g.norm().clamp_min(1e-12)
        assert err < (1e-4 if dtype is None else 5e-2), name


def test_a_head_with_a_bias_is_refused():
    model = load("tiny-llama").model
    head = model.get_output_embeddings()
    model.set_output_embeddings(torch.nn.Linear(head.in_features, head.out_features, bias=True))
    with pytest.raises(ConfigError, match="without bias"):
        LossModel(model, "fused")(torch.randint(0, 10, (1, 9)))


def test_post_processed_logits_are_caught_by_the_first_use_check():
    model = load("tiny-llama").model
    head = model.get_output_embeddings()
    forward = model.forward

    def scaled(*a, **kw):  # an architecture that scales its logits (as Cohere's logit_scale)
        out = forward(*a, **kw)
        out.logits = out.logits * 4
        return out

    model.forward = scaled
    assert head is model.get_output_embeddings()
    with pytest.raises(ConfigError, match="use loss=full"):
        LossModel(model, "fused")(torch.randint(0, model.config.vocab_size, (2, 17)))
