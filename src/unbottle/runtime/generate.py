"""Greedy generation for models that have a forward with a KV cache but no ``GenerationMixin``.

It follows ``transformers``' ``generate`` for what greedy decoding needs: ``max_new_tokens`` /
``max_length``, ``min_new_tokens`` (end-of-sequence suppressed until then), stopping at
end-of-sequence with ``pad_token_id`` after it, and positions from a left-padded attention mask.
Sampling and beam search are refused rather than silently replaced by greedy decoding.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

_IGNORED = {"use_cache", "return_dict_in_generate", "output_scores", "output_logits", "streamer"}


def greedy_generate(
    model: Any,
    input_ids: Any,
    attention_mask: Any = None,
    *,
    generation_config: Any = None,
    cache_factory: Any = None,
    **kwargs: Any,
) -> Any:
    """Greedy-decode after ``input_ids`` ``(B, T)``; return ``(B, T + new)`` token ids.

    Args:
        model: called as ``model(input_ids=, attention_mask=, position_ids=, cache=, logits_to_keep=1)``;
            has ``config`` and ``generation_config``.
        input_ids: the prompts, left-padded when their lengths differ.
        attention_mask: ``(B, T)``, 0 on padding; default all ones.
        generation_config: overrides ``model.generation_config``; keyword arguments override both
            (``max_new_tokens``, ``min_new_tokens``, ``max_length``, ``eos_token_id``, ``pad_token_id``,
            ``do_sample``, ``num_beams``).
        cache_factory: called as ``cache_factory(max_length, batch)`` for the KV cache (a runtime's own,
            e.g. GenAI's preallocated one); default a ``DynamicCache``.

    Raises:
        ValueError: sampling, beam search, or an argument this loop doesn't implement.
    """
    from transformers import DynamicCache

    config = _config(generation_config or model.generation_config, kwargs)
    prompt = torch.as_tensor(input_ids).long()
    batch, length = prompt.shape
    new = config.max_new_tokens if config.max_new_tokens is not None else config.max_length - length
    eos = _ids(config.eos_token_id)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    mask = torch.ones_like(prompt) if attention_mask is None else torch.as_tensor(attention_mask).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): left padding starts at 0
    factory = cache_factory or (lambda _length, _batch: DynamicCache(config=model.config))
    cache = factory(length + max(new, 0), batch)
    done = torch.zeros(batch, dtype=torch.bool)
    tokens = [prompt]
    step_ids, step_positions = prompt, positions
    with torch.inference_mode():
        for step in range(max(new, 0)):
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions,
                        cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            logits = out.logits[:, -1, :].float()  # (B, V)
            if eos and step < (config.min_new_tokens or 0):
                logits[:, eos] = float("-inf")
            token = logits.argmax(dim=-1)  # (B,)
            token = torch.where(done, torch.full_like(token, pad), token)
            tokens.append(token[:, None])
            done |= torch.isin(token, torch.tensor(eos)) if eos else done
            if bool(done.all()):
                break
            step_ids = token[:, None]  # (B, 1)
            step_positions = step_positions[:, -1:] + 1  # (B, 1)
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype)], dim=1)  # (B, P + 1)
    return torch.cat(tokens, dim=1)


def _config(base: Any, overrides: dict[str, Any]) -> Any:
    """A copy of the generation config with ``overrides`` set; what this loop can't do is refused."""
    config = copy.deepcopy(base)
    unknown = sorted(k for k in overrides if k not in _IGNORED and not hasattr(config, k))
    if unknown:
        raise ValueError(f"generate() got arguments this greedy loop doesn't implement: {unknown}")
    for key, value in overrides.items():
        if key not in _IGNORED:
            setattr(config, key, value)
    if config.do_sample or (config.num_beams or 1) > 1:
        raise ValueError(
            f"do_sample={config.do_sample}, num_beams={config.num_beams} given; the ONNX Runtime model "
            "generates greedily only: pass do_sample=False, num_beams=1"
        )
    return config


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
