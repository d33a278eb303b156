"""A model built by ONNX Runtime GenAI's model builder, behind the causal-LM interface.

The builder writes one graph (fused attention: ``GroupQueryAttention``; ``MatMulNBits`` weights)
plus a ``genai_config.json``, and ``onnxruntime_genai`` decodes it with its own loop: the KV cache
lives in buffers allocated once and shared between past and present, so a step copies nothing and
Python is touched once per token. That loop is what makes decode reach the bandwidth limit.

Two ways in, one file:
- a decode loop that asks ``model.new_cache(n)`` (bench scenarios, ``generate``) gets a
  ``GenaiCache`` wrapping an ``og.Generator``; each ``forward`` appends tokens to it;
- everything else (perplexity windows, agreement with a ``DynamicCache``, multiple choice) runs the
  same graph in a plain ONNX Runtime session with past/present tensors, like ``OrtCausalLM``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unbottle.runtime.generate import greedy_generate
from unbottle.runtime.ort_model import META_FILE, OrtCausalLM, _int64, _mask, _store, full_layers

GENAI_CONFIG = "genai_config.json"
_PAST = "past_key_values."


class GenaiCache:
    """A KV cache owned by an ``og.Generator`` (buffers sized once for ``max_length`` positions).

    One row only: GenAI takes tokens from outside just once for a batch of several rows (after that
    it picks them itself, and stops rows at end-of-sequence), so batches decode in the session.

    Attributes:
        generator: the ``og.Generator``; max_length: positions it can hold.
    """

    def __init__(self, og_model: Any, max_length: int) -> None:
        import onnxruntime_genai as og

        params = og.GeneratorParams(og_model)
        params.set_search_options(max_length=max_length, do_sample=False)
        self.generator = og.Generator(og_model, params)
        self.max_length = max_length

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.generator.token_count())

    def append(self, ids: Any) -> Any:
        """Run the model on ``ids (1, T)``; return the logits of those positions ``(1, T, V)``."""
        self.generator.append_tokens(np.ascontiguousarray(ids, dtype=np.int32))
        return np.asarray(self.generator.get_output("logits"))

    def rewind(self, positions: int) -> None:
        """Forget the last ``positions`` tokens (a rejected speculative draft)."""
        if positions:
            self.generator.rewind_to(self.get_seq_length() - positions)

    def step(self, input_ids: Any, keep: Any) -> Any:
        """``append`` as the model's forward returns it: a tensor of the positions ``keep`` asks for."""
        return _keep(torch.from_numpy(self.append(_int64(input_ids))), keep)


class GenaiCausalLM(OrtCausalLM):
    """A GenAI-built model (folder with ``genai_config.json`` and its graph) run on the CPU.

    Attributes (beyond ``OrtCausalLM``'s): folder: the model folder; precision: what the builder
    quantized to (``int4``, ``int8``, ``fp32``), as recorded by the pass; ``min_rows`` (speculation):
    see ``OrtCausalLM``.
    """

    def __init__(self, folder: str | Path, config: Any, generation_config: Any = None, **kwargs: Any) -> None:
        self.folder = Path(folder)
        genai = json.loads((self.folder / GENAI_CONFIG).read_text(encoding="utf-8"))
        graph = self.folder / genai["model"]["decoder"]["filename"]
        super().__init__(graph, config, generation_config, **kwargs)
        self._og_model: Any = None
        self._og_threads = 0

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None, optimization: str = "all") -> GenaiCausalLM:
        """Open a folder written by the genai pass (``unbottle_onnx.json`` beside the GenAI files)."""
        from transformers import AutoConfig, GenerationConfig

        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        generation = (
            GenerationConfig.from_pretrained(folder) if (folder / "generation_config.json").exists() else None
        )
        return cls(
            folder,
            AutoConfig.from_pretrained(folder),
            generation,
            threads=threads,
            optimization=optimization,
            n_parameters=meta["n_parameters"],
            stored_bytes=meta.get("stored_bytes"),
        )

    # --- the GenAI runtime ---------------------------------------------------------------------------

    def og_model(self) -> Any:
        """The ``og.Model``, (re)built when the thread count in force changed."""
        import onnxruntime_genai as og

        threads = self.threads or torch.get_num_threads()
        if self._og_model is None or threads != self._og_threads:
            config = og.Config(str(self.folder))
            options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
            self._og_model = og.Model(config)
            self._og_threads = threads
        return self._og_model

    def new_cache(self, max_length: int, batch: int = 1) -> Any:
        """A cache for a decode loop of up to ``max_length`` positions (prompt included): GenAI's own
        for one row, a ``DynamicCache`` (the session path) for several."""
        if batch > 1:
            from transformers import DynamicCache

            return DynamicCache(config=self.config)
        return GenaiCache(self.og_model(), max_length)

    # --- the causal-LM interface --------------------------------------------------------------------

    def _describe_io(self, session: Any) -> None:
        inputs = {i.name: i for i in session.get_inputs()}
        self._past_names = [n for n in inputs if n.startswith(_PAST)]
        self._output_names = [o.name for o in session.get_outputs()]
        self._input_names = set(inputs)
        text = self.config.get_text_config(decoder=True)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self._kv_shape = (int(inputs[self._past_names[0]].shape[1]), int(head_dim))  # (kv_heads, head_dim)
        self._empty = {}

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        cache: Any = None,
        past_key_values: Any = None,
        use_cache: bool | None = True,
        logits_to_keep: int | Any = 0,
        **kwargs: Any,
    ) -> Any:
        """One step, as ``OrtCausalLM.forward``; a cache with a ``step`` method runs it itself
        (``GenaiCache``: GenAI's own loop; ``hybrid_model.HybridCache``: torch prompt, bound buffers).

        ``position_ids`` must be the default (``P .. P + T - 1`` after right-aligned real tokens): the
        fused attention derives positions from the mask.
        """
        from transformers.modeling_outputs import CausalLMOutputWithPast

        if input_ids is None:
            raise ValueError("GenaiCausalLM takes input_ids; inputs_embeds can't enter the built graph")
        if kwargs.get("labels") is not None:
            raise ValueError("GenaiCausalLM computes no loss; compute it from .logits")
        cache = cache if cache is not None else past_key_values
        if callable(getattr(cache, "step", None)):  # a cache that runs its own steps (GenAI's, hybrid)
            return CausalLMOutputWithPast(logits=cache.step(input_ids, logits_to_keep), cache=cache)
        return self._session_forward(input_ids, attention_mask, cache, use_cache, logits_to_keep)

    __call__ = forward

    def _session_forward(self, input_ids: Any, mask: Any, cache: Any, use_cache: Any, keep: Any) -> Any:
        """The graph in a plain ORT session: past tensors in, presents written back into ``cache``."""
        from transformers import DynamicCache
        from transformers.modeling_outputs import CausalLMOutputWithPast

        session = self.session()
        use_cache = True if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if use_cache:
            full_layers(cache)  # the graph keeps every position; its attention applies sliding windows
        ids = _int64(input_ids)  # (B, T)
        batch, length = ids.shape
        past_len = cache.get_seq_length() if use_cache else 0
        feed = {"input_ids": ids, "attention_mask": _mask(mask, batch, past_len + length)}  # (B, P + T)
        if (np.diff(feed["attention_mask"], axis=1) > 0).any():
            raise ValueError(
                "a GenAI graph's fused attention takes positions from the mask and so needs unpadded or "
                "right-padded rows; this attention_mask pads on the left: give one prompt at a time"
            )
        feed.update(zip(self._past_names, self._past(cache if use_cache else None, batch), strict=True))
        outputs = session.run(self._output_names, {k: v for k, v in feed.items() if k in self._input_names})
        logits = _keep(torch.from_numpy(outputs[0]), keep)  # (B, K, V)
        if use_cache:
            presents = [torch.from_numpy(np.asarray(o)) for o in outputs[1:]]
            _store(cache, presents)
            self._last = (presents, outputs[1:])
        return CausalLMOutputWithPast(logits=logits, cache=cache if use_cache else None)

    def generate(self, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        """Greedy generation in GenAI's loop (unpadded prompts only: see ``forward``).

        Raises:
            ValueError: a padded batch, or anything ``greedy_generate`` refuses.
        """
        prompt = torch.as_tensor(input_ids).long()
        if attention_mask is not None and not bool(torch.as_tensor(attention_mask).all()):
            raise ValueError(
                "a GenAI graph generates from unpadded prompts only (its attention derives positions from "
                "the mask); generate one prompt at a time or prompts of equal length"
            )
        return greedy_generate(self, prompt, None, cache_factory=self.new_cache, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> GenaiCausalLM:
        return GenaiCausalLM(
            self.folder,
            copy.deepcopy(self.config, memo),
            copy.deepcopy(self.generation_config, memo),
            threads=self.threads,
            optimization=self.optimization,
            n_parameters=self.n_parameters,
            stored_bytes=self.stored_bytes,
        )

    def __repr__(self) -> str:
        return (
            f"GenaiCausalLM({str(self.folder)!r}, {self.config.model_type}, "
            f"{self.stored_bytes / 2**20:.1f} MiB, threads={self.threads or 'torch'})"
        )


def _keep(logits: Any, keep: Any) -> Any:
    """The positions ``logits_to_keep`` asks for: 0 all, k the last k, or a tensor of positions."""
    if hasattr(keep, "ndim") or isinstance(keep, (list, tuple)):
        return logits[:, torch.as_tensor(keep).long().reshape(-1)]
    keep = int(keep)
    return logits if keep <= 0 else logits[:, -keep:]
