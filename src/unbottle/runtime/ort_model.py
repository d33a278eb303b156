"""An ONNX Runtime session behind the interface of a transformers causal LM.

Scenarios and evaluators call ``model(input_ids=..., cache=..., use_cache=True, logits_to_keep=1)``,
read ``.logits`` and reuse the same cache object step after step. ``OrtCausalLM`` answers those
calls from a graph exported by ``unbottle.passes.onnx_export`` (past key/values in, present ones
out) and writes the presents back into the caller's ``DynamicCache``, sharing memory with ONNX
Runtime's outputs, so a decode step copies nothing on the Python side.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from unbottle.runtime.generate import greedy_generate
from unbottle.runtime.weights import StoredWeights

Optimization = Literal["disable", "basic", "extended", "all"]
META_FILE = "unbottle_onnx.json"
GRAPH_FILE = "model.onnx"


class OrtModule:
    """What ``nn.Module`` callers touch on a model ONNX Runtime runs: inference mode only, the CPU
    only, and one storage-less tensor (``self._weights``, a ``StoredWeights``) as its parameters."""

    _weights: StoredWeights

    def eval(self) -> Any:
        return self

    def train(self, mode: bool = True) -> Any:
        if mode:
            raise ValueError("an ONNX Runtime model runs inference only; train the torch model before export")
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Any:
        return self

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """Only the CPU (and float32) is supported; anything else is refused."""
        for a in [*args, *kwargs.values()]:
            if isinstance(a, (str, torch.device)) and torch.device(a).type != "cpu":
                raise ValueError(f"{type(self).__name__} runs on the CPU only; {a} given")
            if isinstance(a, torch.dtype) and a != torch.float32:
                raise ValueError(f"{type(self).__name__}'s inputs and outputs are float32; {a} given")
        return self

    def parameters(self, recurse: bool = True):
        """One storage-less tensor: ``numel()`` is the parameter count, its packed bytes the graph's."""
        yield self._weights

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        yield f"{prefix}onnx_weights", self._weights

    def buffers(self, recurse: bool = True):
        return iter(())

    def modules(self):
        yield self

    def named_modules(self, memo: Any = None, prefix: str = "", remove_duplicate: bool = True):
        yield prefix, self

    def children(self):
        return iter(())


class OrtCausalLM(OrtModule):
    """A causal LM run by ONNX Runtime on the CPU.

    Attributes:
        path: the ``.onnx`` file; config / generation_config: the source model's transformers configs.
        threads: ORT intra-op threads; None follows ``torch.get_num_threads()`` at each call.
        optimization: ORT graph optimisation level. n_parameters / stored_bytes: what ``parameters()``
            reports (the source model's unique parameters, the graph's initializer bytes).
    """

    main_input_name = "input_ids"
    device: Any
    training = False

    def __init__(
        self,
        path: str | Path,
        config: Any,
        generation_config: Any = None,
        threads: int | None = None,
        optimization: Optimization = "all",
        n_parameters: int = 0,
        stored_bytes: int | None = None,
    ) -> None:
        from transformers import GenerationConfig

        self.path = Path(path)
        self.config = config
        self.generation_config = generation_config or GenerationConfig.from_model_config(config)
        self.threads = threads
        self.optimization = optimization
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.n_parameters = n_parameters
        self.stored_bytes = stored_bytes if stored_bytes is not None else _file_bytes(self.path)
        self._weights = StoredWeights(n_parameters, self.stored_bytes)
        self._session: Any = None
        self._session_threads = 0
        self._last: tuple[list[Any], list[Any]] = ([], [])  # (tensors stored in a cache, their arrays)

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None, optimization: Optimization = "all"):
        """Open a folder written by ``save_meta`` (the onnx pass's output folder)."""
        from transformers import AutoConfig, GenerationConfig

        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        generation = (
            GenerationConfig.from_pretrained(folder) if (folder / "generation_config.json").exists() else None
        )
        return cls(
            folder / meta["graph"],
            AutoConfig.from_pretrained(folder),
            generation,
            threads=threads,
            optimization=optimization,
            n_parameters=meta["n_parameters"],
            stored_bytes=meta.get("stored_bytes"),
        )

    # ONNX Runtime's attention (fused, or MatMul and Softmax in an exported graph) computes a one-token
    # call with MLAS's one-row SGEMM kernel, which rounds the last bit otherwise than the kernel of a
    # call over several tokens; every other kernel computes a row the same whatever rows run beside it
    # (weight-only MatMulNBits with int8 activations included: they are quantized per row and block).
    # int8 activations carry that bit on to other codes and other tokens (SmolLM2's GGUF build: after
    # 6-20 tokens). Speculation therefore runs every call over two rows at least.
    min_rows = 2

    @property
    def rows_independent(self) -> bool:
        """Whether each row of a call computes the same whatever rows run beside it (with ``min_rows``):
        not where activations are quantized per tensor (``onnx:quantize=int8-dynamic``), whose scale
        every row of the call shares."""
        path = self.path.parent / META_FILE
        built = json.loads(path.read_text(encoding="utf-8")).get("config") or {} if path.exists() else {}
        return built.get("quantize") != "int8-dynamic"

    def save_meta(self, extra: dict[str, Any] | None = None) -> None:
        """Write the configs and ``unbottle_onnx.json`` beside the graph, so ``load`` can reopen it."""
        folder = self.path.parent
        self.config.save_pretrained(folder)
        self.generation_config.save_pretrained(folder)
        meta = {
            "graph": self.path.name,
            "n_parameters": self.n_parameters,
            "stored_bytes": self.stored_bytes,
            **(extra or {}),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    # --- the session -------------------------------------------------------------------------------

    def session(self) -> Any:
        """The ORT session, (re)built when the thread count in force changed."""
        threads = self.threads or torch.get_num_threads()
        if self._session is None or threads != self._session_threads:
            self._session = _make_session(self.path, threads, self.optimization)
            self._session_threads = threads
            self._describe_io(self._session)
        return self._session

    def _describe_io(self, session: Any) -> None:
        inputs = {i.name: i for i in session.get_inputs()}
        self._past_names = [n for n in inputs if n.startswith("past.")]
        self._output_names = [o.name for o in session.get_outputs()]
        shape = inputs[self._past_names[0]].shape if self._past_names else [0, 0, 0, 0]
        self._kv_shape = (int(shape[1]), int(shape[3]))  # (kv_heads, head_dim): the static dims
        self._empty: dict[int, Any] = {}

    # --- the causal-LM interface --------------------------------------------------------------------

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
        """One step: logits for the kept positions; the cache (given or new) updated in place.

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, P + T)``, 1 for real tokens; default all ones.
            position_ids: ``(B, T)``; default ``P .. P + T - 1``, as transformers' Llama does.
            cache / past_key_values: a ``transformers`` cache (``DynamicCache``) holding ``P`` past
                positions; it receives the presents.
            use_cache: False runs without a past and returns no cache.
            logits_to_keep: 0 for all positions, k for the last k, or a 1-D tensor of positions.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits (B, K, V)`` (float32) and ``cache``.
        """
        from transformers.modeling_outputs import CausalLMOutputWithPast

        if input_ids is None:
            raise ValueError("OrtCausalLM takes input_ids; inputs_embeds can't enter an exported graph")
        if kwargs.get("labels") is not None:
            raise ValueError("OrtCausalLM computes no loss; compute it from .logits")
        session = self.session()
        use_cache = True if use_cache is None else use_cache
        cache = cache if cache is not None else past_key_values
        if use_cache and cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config)
        if use_cache:
            full_layers(cache)
        ids = _int64(input_ids)  # (B, T)
        batch, length = ids.shape
        past_len = cache.get_seq_length() if use_cache else 0
        feed = {
            "input_ids": ids,
            "attention_mask": _mask(attention_mask, batch, past_len + length),  # (B, P + T)
            "position_ids": _positions(position_ids, batch, past_len, length),  # (B, T)
            "logits_index": _logits_index(logits_to_keep, length),  # (K,)
        }
        feed.update(zip(self._past_names, self._past(cache if use_cache else None, batch), strict=True))
        outputs = session.run(self._output_names, feed)
        logits = torch.from_numpy(outputs[0])  # (B, K, V)
        if use_cache:
            presents = [torch.from_numpy(np.asarray(o)) for o in outputs[1:]]
            _store(cache, presents)
            self._last = (presents, outputs[1:])
        return CausalLMOutputWithPast(logits=logits, cache=cache if use_cache else None)

    __call__ = forward

    def _past(self, cache: Any, batch: int) -> list[Any]:
        """Past key/values as float32 numpy arrays sharing the cache's memory; empty ones without a past.

        When the cache still holds the tensors the last call stored, their arrays are reused as they are.
        """
        if cache is None or cache.get_seq_length() == 0:
            if batch not in self._empty:
                self._empty[batch] = np.zeros((batch, self._kv_shape[0], 0, self._kv_shape[1]), np.float32)
            return [self._empty[batch]] * len(self._past_names)
        tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        last_tensors, last_arrays = self._last
        if len(tensors) == len(last_tensors) and all(
            a is b for a, b in zip(tensors, last_tensors, strict=True)
        ):
            return last_arrays
        if len(tensors) != len(self._past_names):
            raise ValueError(
                f"the cache holds {len(tensors) // 2} layers; the graph takes {len(self._past_names) // 2}"
            )
        return [np.ascontiguousarray(t.detach().to("cpu").float().numpy()) for t in tensors]

    def generate(self, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        """Greedy generation with the KV cache (see ``unbottle.runtime.generate.greedy_generate``)."""
        return greedy_generate(self, input_ids, attention_mask, **kwargs)

    def can_generate(self) -> bool:
        return True

    def get_output_embeddings(self) -> None:
        return None

    def __deepcopy__(self, memo: dict[int, Any]) -> OrtCausalLM:
        return OrtCausalLM(
            self.path,
            copy.deepcopy(self.config, memo),
            copy.deepcopy(self.generation_config, memo),
            self.threads,
            self.optimization,
            self.n_parameters,
            self.stored_bytes,
        )

    def __repr__(self) -> str:
        return (
            f"OrtCausalLM({str(self.path)!r}, {self.config.model_type}, {self.stored_bytes / 2**20:.1f} MiB, "
            f"threads={self.threads or 'torch'}, optimization={self.optimization})"
        )


def _make_session(path: Path, threads: int, optimization: Optimization) -> Any:
    import onnxruntime as ort

    options = session_options(threads, optimization)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_options(threads: int, optimization: Optimization = "all") -> Any:
    """The ``SessionOptions`` every unbottle ORT session runs with: ``threads`` intra-op threads, one
    inter-op thread, the ``optimization`` level, errors only in the log."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3  # errors only: ORT warns about every unused initializer
    return options


def full_layers(cache: Any) -> None:
    """Make every layer of ``cache`` a plain ``DynamicLayer`` that keeps all its positions, in place.

    The graph takes and returns every past position of every layer and applies sliding windows in its
    attention masks (``unbottle.passes.onnx_export``). ``DynamicCache(config=...)`` gives each
    sliding-window layer (Mistral, Gemma 2/3) a ``DynamicSlidingWindowLayer``, which crops its keys to
    the window and counts positions apart from their length; an empty one is swapped for a full layer
    here, so callers keep building caches from the config as they do for torch models.

    Raises:
        ValueError: a layer of another kind that already holds positions (it can't be widened).
    """
    from transformers.cache_utils import DynamicLayer

    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            continue
        if layer.is_initialized and layer.get_seq_length() > 0:
            raise ValueError(
                f"cache layer {i} is a {type(layer).__name__} holding {layer.get_seq_length()} positions; "
                "the ONNX Runtime model keeps full layers: start from an empty DynamicCache"
            )
        cache.layers[i] = DynamicLayer()


def _store(cache: Any, presents: list[Any]) -> None:
    """Put each layer's present key/values into ``cache``: assigned over a past, else appended."""
    for i in range(len(presents) // 2):
        keys, values = presents[2 * i], presents[2 * i + 1]  # (B, kv_heads, P + T, head_dim)
        layers = cache.layers
        layer = layers[i] if i < len(layers) else None
        if layer is not None and layer.is_initialized and hasattr(layer, "keys"):
            layer.keys, layer.values = keys, values
        else:
            cache.update(keys, values, i)


def _int64(x: Any) -> Any:
    array = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return np.ascontiguousarray(array, dtype=np.int64)


def _mask(mask: Any, batch: int, total: int) -> Any:
    if mask is None:
        return np.ones((batch, total), np.int64)
    array = _int64(mask)
    if array.shape != (batch, total):
        raise ValueError(
            f"attention_mask has shape {tuple(array.shape)}; it must cover the past and the new tokens: "
            f"({batch}, {total})"
        )
    return array


def _positions(positions: Any, batch: int, past: int, length: int) -> Any:
    if positions is None:
        return np.broadcast_to(np.arange(past, past + length, dtype=np.int64), (batch, length)).copy()
    array = _int64(positions)
    return np.ascontiguousarray(np.broadcast_to(array, (batch, length)))


def _logits_index(keep: Any, length: int) -> Any:
    if hasattr(keep, "ndim") or isinstance(keep, (list, tuple)):
        return _int64(keep).reshape(-1)
    keep = int(keep)
    return np.arange(0 if keep <= 0 else max(length - keep, 0), length, dtype=np.int64)


def _file_bytes(path: Path) -> int:
    files = [path, path.with_name(f"{path.name}.data")]
    return sum(f.stat().st_size for f in files if f.exists())
