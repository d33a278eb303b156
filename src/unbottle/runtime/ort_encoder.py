"""An ONNX Runtime encoder behind the interface of a transformers masked LM or sequence classifier.

Scenarios and evaluators call ``model.base_model(input_ids=..., attention_mask=...)`` and read
``.last_hidden_state`` (sentence embeddings, the encode scenario), or ``model(input_ids=...,
attention_mask=...)`` and read ``.logits`` (the head: pseudo-perplexity, label agreement).
``OrtEncoder`` answers the first from ``encoder.onnx`` and the second from ``model.onnx``, the graphs
``unbottle.passes.onnx_encoder`` writes; a model exported without its head (a sentence encoder saved
without one) has no ``model.onnx``, and calling for its logits is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unbottle.runtime.ort_model import META_FILE, Optimization, OrtModule, _make_session
from unbottle.runtime.weights import StoredWeights

ENCODER_GRAPH = "encoder.onnx"
HEAD_GRAPH = "model.onnx"


@dataclasses.dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class _Stack:
    """``OrtEncoder.base_model``: the encoder stack's graph alone."""

    def __init__(self, owner: OrtEncoder) -> None:
        self.owner = owner

    def __call__(self, input_ids: Any = None, attention_mask: Any = None, **_: Any) -> EncoderOutput:
        return EncoderOutput(last_hidden_state=self.owner.run(ENCODER_GRAPH, input_ids, attention_mask))


class OrtEncoder(OrtModule):
    """An encoder (and its head, where exported) run by ONNX Runtime on the CPU.

    Attributes:
        folder: the export folder; graphs: the ``.onnx`` files in it; task: ``masked-lm`` or
            ``sequence-classification``; path: the encoder graph (what a saved model copies the folder of).
        threads: ORT intra-op threads; None follows ``torch.get_num_threads()`` at each call.
    """

    main_input_name = "input_ids"
    training = False

    def __init__(
        self,
        folder: str | Path,
        config: Any,
        graphs: list[str],
        task: str = "masked-lm",
        threads: int | None = None,
        optimization: Optimization = "all",
        n_parameters: int = 0,
        stored_bytes: int = 0,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ENCODER_GRAPH
        self.config, self.graphs, self.task = config, list(graphs), task
        self.threads, self.optimization = threads, optimization
        self.n_parameters, self.stored_bytes = n_parameters, stored_bytes
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self._weights = StoredWeights(n_parameters, stored_bytes)
        self._sessions: dict[str, tuple[int, Any]] = {}

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None, optimization: Optimization = "all"):
        """Open a folder written by ``save_meta``."""
        from transformers import AutoConfig

        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        return cls(
            folder, AutoConfig.from_pretrained(folder), meta["graphs"], meta["task"], threads, optimization,
            meta["n_parameters"], meta["stored_bytes"],
        )  # fmt: skip

    def save_meta(self, extra: dict[str, Any] | None = None) -> None:
        """Write the config and ``unbottle_onnx.json`` beside the graphs, so ``load`` can reopen them."""
        self.config.save_pretrained(self.folder)
        meta = {
            "graph": ENCODER_GRAPH, "graphs": self.graphs, "task": self.task,
            "n_parameters": self.n_parameters, "stored_bytes": self.stored_bytes, **(extra or {}),
        }  # fmt: skip
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        (self.folder / META_FILE).write_text(text, encoding="utf-8")

    @property
    def has_head(self) -> bool:
        return HEAD_GRAPH in self.graphs

    @property
    def base_model(self) -> _Stack:
        return _Stack(self)

    def run(self, graph: str, input_ids: Any, attention_mask: Any = None) -> torch.Tensor:
        """The one output of ``graph`` for a batch ``(B, T)`` (all positions attended without a mask)."""
        ids = np.ascontiguousarray(torch.as_tensor(input_ids).cpu().numpy(), dtype=np.int64)
        mask = np.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).cpu().numpy()
        feeds = {"input_ids": ids, "attention_mask": np.ascontiguousarray(mask, dtype=np.int64)}
        return torch.from_numpy(self._session(graph).run(None, feeds)[0])

    def _session(self, graph: str) -> Any:
        threads = self.threads or torch.get_num_threads()
        made = self._sessions.get(graph)
        if made is None or made[0] != threads:
            made = (threads, _make_session(self.folder / graph, threads, self.optimization))
            self._sessions[graph] = made
        return made[1]

    def __call__(self, input_ids: Any = None, attention_mask: Any = None, **_: Any) -> EncoderOutput:
        if not self.has_head:
            raise ValueError(
                "this encoder was exported without its head (its checkpoint had none): read "
                "model.base_model(...).last_hidden_state, the sentence embedding's input"
            )
        return EncoderOutput(logits=self.run(HEAD_GRAPH, input_ids, attention_mask))

    forward = __call__

    def __deepcopy__(self, memo: dict[int, Any]) -> OrtEncoder:
        return OrtEncoder(
            self.folder, copy.deepcopy(self.config, memo), self.graphs, self.task, self.threads,
            self.optimization, self.n_parameters, self.stored_bytes,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"OrtEncoder({str(self.folder)!r}, {self.config.model_type}, {self.task}, graphs={self.graphs}, "
            f"{self.stored_bytes / 2**20:.1f} MiB, threads={self.threads or 'torch'})"
        )
