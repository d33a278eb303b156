"""Prefill in torch, decode in a GenAI-built ONNX Runtime graph: each phase on the engine that wins it.

A long prompt is a matrix-matrix product: MKL's float32 GEMM in eager torch runs it faster on a CPU than
ONNX Runtime's 4-bit kernel with int8 activations (measured: 256 tokens of SmolLM2 in 0.54 s against
1.03 s, one thread). Decoding reads every weight once per token: there the 4-bit graph wins several
times over. ``HybridCausalLM`` runs the prompt through the float model, copies its KV cache into
buffers sized once for the whole request, and decodes with the graph's fused attention
(``GroupQueryAttention``) writing into those same buffers (past and present bound to one ``OrtValue``
per layer with ORT's IO binding: no per-step concatenation, no copy).

Both engines compute keys after the rotary embedding in transformers' layout (batch, kv heads,
positions, head dim), so the float model's cache is the graph's past as it is. A ``HybridCache`` runs
its own steps (``GenaiCausalLM.forward`` hands them to it); everything else (perplexity windows,
batches, a ``DynamicCache``) runs in the graph's plain session, so accuracy is measured on the decode
engine's numerics.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unbottle.runtime.caches import cache_keyword, forward_kwargs
from unbottle.runtime.genai_model import GenaiCausalLM, _keep
from unbottle.runtime.ort_model import _int64, full_layers
from unbottle.runtime.weights import StoredWeights


def _bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


class HybridCache:
    """Per-layer key and value buffers of ``max_length`` positions for one row, and how many are filled.

    Attributes:
        buffers: past input name → ``OrtValue`` (1, kv heads, max_length, head dim), float32.
        length: positions filled.
    """

    def __init__(self, model: HybridCausalLM, max_length: int) -> None:
        import onnxruntime as ort

        model.session()  # its inputs name the buffers
        past_names, (heads, head_dim) = model._past_names, model._kv_shape
        self.model = model
        self.max_length = max_length
        self.length = 0
        self.buffers = {
            n: ort.OrtValue.ortvalue_from_numpy(np.zeros((1, heads, max_length, head_dim), np.float32))
            for n in past_names
        }
        self.binding: Any = None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def rewind(self, positions: int) -> None:
        """Forget the last ``positions`` tokens (a rejected speculative draft): the next step writes
        over them, since the graph places new keys and values after the ``length`` the mask gives."""
        if not 0 <= positions < max(1, self.length):
            raise ValueError(f"can't rewind {positions} of the {self.length} positions the cache holds")
        self.length -= positions

    def step(self, input_ids: Any, keep: Any) -> Any:
        """The model's forward on this cache: the prompt (empty cache) in torch, later tokens in the
        graph with the buffers bound in place; logits of the positions ``keep`` asks for."""
        if input_ids is None or input_ids.shape[0] != 1:
            raise ValueError("a HybridCache decodes one row of input_ids; use a DynamicCache for batches")
        run = self.model._prefill if self.length == 0 else self.model._step
        return run(input_ids, self, keep)

    def fill(self, layers: list[tuple[Any, Any]]) -> None:
        """Copy a float model's per-layer (keys, values) ``(1, heads, T, dim)`` into the buffers."""
        length = int(layers[0][0].shape[2])
        if length > self.max_length:
            raise ValueError(
                f"a prompt of {length} tokens does not fit a cache of {self.max_length} positions"
            )
        for i, (keys, values) in enumerate(layers):
            for kind, tensor in (("key", keys), ("value", values)):
                buffer = self.buffers[f"past_key_values.{i}.{kind}"].numpy()
                buffer[:, :, :length] = tensor.detach().float().numpy()
        self.length = length


class HybridCausalLM(GenaiCausalLM):
    """A GenAI build that decodes, with ``torch_model`` (the same weights in float) for prompts.

    Attributes (beyond ``GenaiCausalLM``'s): torch_model: the float transformers model the build was
    made from; its bytes count in ``stored_bytes`` (both stay in memory).
    """

    def __init__(self, folder: str | Path, torch_model: Any, **kwargs: Any) -> None:
        """``kwargs`` as ``GenaiCausalLM``'s; ``stored_bytes`` is the graph's, the float model's are added."""
        super().__init__(
            folder, torch_model.config, getattr(torch_model, "generation_config", None), **kwargs
        )
        self.torch_model = torch_model.eval()
        self.stored_bytes += _bytes(torch_model)
        self._weights = StoredWeights(self.n_parameters, self.stored_bytes)

    def new_cache(self, max_length: int, batch: int = 1) -> Any:
        """Preallocated buffers for one row (the cache runs each step: ``HybridCache.step``); several
        rows decode in the graph's session."""
        return super().new_cache(max_length, batch) if batch > 1 else HybridCache(self, max_length)

    def _prefill(self, input_ids: Any, cache: HybridCache, keep: Any) -> Any:
        """The prompt through the float model; its KV cache copied into the buffers."""
        from transformers import DynamicCache

        past = DynamicCache(config=self.torch_model.config)
        full_layers(past)  # the graph keeps every position of sliding-window layers too
        kw: dict[str, Any] = {cache_keyword(self.torch_model): past}
        last_only = (
            isinstance(keep, int) and keep > 0 and "logits_to_keep" in forward_kwargs(self.torch_model)
        )
        if last_only:  # a long prompt's full logits would be (T, vocab) floats nobody reads
            kw["logits_to_keep"] = keep
        with torch.inference_mode():
            out = self.torch_model(input_ids=torch.as_tensor(input_ids).long(), use_cache=True, **kw)
        cache.fill([(layer.keys, layer.values) for layer in past.layers])
        return out.logits if last_only else _keep(out.logits, keep)

    def _step(self, input_ids: Any, cache: HybridCache, keep: Any) -> Any:
        """Tokens after the prompt through the graph, reading and writing the buffers in place."""
        session = self.session()
        ids = _int64(input_ids)  # (1, T)
        total = cache.length + ids.shape[1]
        if total > cache.max_length:
            raise ValueError(f"the cache holds {cache.max_length} positions; this step needs {total}")
        if cache.binding is None:  # past and present share each buffer: the graph writes in place
            cache.binding = session.io_binding()
            for name, value in cache.buffers.items():
                cache.binding.bind_ortvalue_input(name, value)
                cache.binding.bind_ortvalue_output(name.replace("past_key_values.", "present."), value)
        binding = cache.binding
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
        binding.bind_output("logits")  # its shape follows T
        session.run_with_iobinding(binding)
        cache.length = total
        logits = binding.get_outputs()[-1].numpy()  # bound last: after the presents
        return _keep(torch.from_numpy(logits.copy()), keep)

    def __deepcopy__(self, memo: dict[int, Any]) -> HybridCausalLM:
        return HybridCausalLM(
            self.folder,
            copy.deepcopy(self.torch_model, memo),
            threads=self.threads,
            optimization=self.optimization,
            n_parameters=self.n_parameters,
            stored_bytes=self.stored_bytes - _bytes(self.torch_model),
        )

    def __repr__(self) -> str:
        return f"HybridCausalLM(torch prefill, {super().__repr__()})"
