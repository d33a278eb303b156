"""The onnx pass for encoders: BERT-class models exported to ONNX Runtime, optionally int8.

ONNX Runtime with dynamic int8 ``MatMulInteger`` is how BERT-class encoders are commonly served on CPUs
(Optimum and ORT's own transformer tooling do it); its graph optimiser fuses the attention and layer
norms of the exported graph. An encoder has no KV cache, so the graph is one call over a padded batch:
``(input_ids, attention_mask)`` to the last hidden state (``encoder.onnx``: what sentence embeddings
and the encode scenario read) and, where the checkpoint carries a head (masked-LM or classifier), a
second graph to the head's logits (``model.onnx``: what pseudo-perplexity and label agreement read).
A sentence encoder saved without its head gets no head graph: the head transformers filled in is
random. Both graphs are quantized alike.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim

from unbottle.passes import onnx_quantize as oq
from unbottle.passes.base import Applied, PassContext
from unbottle.passes.onnx_export import _quiet_exporter, fold_transposed_weights, split_gemms, tag_modules
from unbottle.passes.onnx_store import quantize_and_save, reusable
from unbottle.runtime.ort_encoder import ENCODER_GRAPH, HEAD_GRAPH, OrtEncoder
from unbottle.sources.base import count_parameters

ENCODER_CLASSES = ("ForMaskedLM", "ForSequenceClassification")


def is_encoder(model: Any) -> bool:
    """A transformers masked LM or sequence classifier (not a decoder)."""
    return type(model).__name__.endswith(ENCODER_CLASSES) and not getattr(model.config, "is_decoder", False)


def encoder_unsupported(model: Any, attention: str) -> str | None:
    """Why this exporter can't trace the encoder (None when it can)."""
    if getattr(model, "base_model", None) is None:
        return f"{type(model).__name__} has no base_model (the encoder stack) to export"
    if attention == "sdpa" and not getattr(type(model), "_supports_sdpa", True):
        return f"transformers has no sdpa attention for {type(model).__name__}; use attention=eager"
    return None


class _Graph(torch.nn.Module):
    """``(input_ids, attention_mask)`` to one output: the stack's last hidden state, or the head's
    logits. The model is held as ``model``, so each traced node's scope names its module as the torch
    model does (``model.bert.encoder.layer.0...``) and ``exclude`` finds it."""

    def __init__(self, model: Any, output: str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.output == "last_hidden_state":
            return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_graphs(model: Any, opset: int, attention: str, head: bool) -> dict[str, Any]:
    """``{file name: onnx.ModelProto}``: the encoder stack, and the head's graph when ``head``."""
    import onnx_ir as ir

    wanted = {ENCODER_GRAPH: _Graph(model, "last_hidden_state").eval()}
    if head:
        wanted[HEAD_GRAPH] = _Graph(model, "logits").eval()
    ids = torch.randint(4, int(model.config.vocab_size), (2, 16), generator=torch.Generator().manual_seed(0))
    dyn = Dim.DYNAMIC
    before = model.config._attn_implementation
    model.set_attn_implementation(attention)
    graphs = {}
    try:
        for name, module in wanted.items():
            with torch.no_grad(), _quiet_exporter():
                program = torch.onnx.export(
                    module, (ids, torch.ones_like(ids)), dynamo=True,
                    dynamic_shapes=({0: dyn, 1: dyn}, {0: dyn, 1: dyn}),
                    input_names=["input_ids", "attention_mask"], output_names=[module.output],
                    opset_version=opset, optimize=True, verbose=False,
                )  # fmt: skip
            graph = program.model
            split_gemms(graph)
            tag_modules(graph)
            fold_transposed_weights(graph)
            graphs[name] = ir.serde.serialize_model(graph)
    finally:
        model.set_attn_implementation(before)
    return graphs


def apply_onnx_encoder(model: Any, config: Any, context: PassContext, key: str, folder: Path) -> Applied:
    """Export (or reuse the cached export of) ``model``'s graphs into ``folder``; an ``OrtEncoder``."""
    meta = reusable(folder, key)
    notes = []
    if meta is None:
        meta = _write(model, config, context.head, folder, key)
    else:
        notes.append(f"reused the export cached in {folder}")
    encoder = OrtEncoder(
        folder, model.config, meta["graphs"], context.task, config.threads, config.optimization,
        count_parameters(model), meta["stored_bytes"],
    )  # fmt: skip
    encoder.save_meta({"key": key, "config": config.to_dict()})
    notes += meta["notes"]
    if config.verify:
        notes.append(verify_encoder(model, encoder, config.quantize == "none"))
    return Applied(encoder, touched=meta["touched"], notes=notes)


def _write(model: Any, config: Any, head: bool, folder: Path, key: str) -> dict[str, Any]:
    """Export and quantize the graphs aside, then move them in (an interrupted export never looks done)."""
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    touched: set[str] = set()
    notes: list[str] = []
    stored = 0
    for name, proto in export_graphs(model, config.opset, config.attention, head).items():
        todo, excluded = oq.split_by_exclude(proto, config.exclude if config.quantize != "none" else ())
        if config.quantize != "none":
            touched |= set(todo.values())
        summary = quantize_and_save(proto, config, staging / name, excluded)
        stored += sum(summary["weight_bytes"].values())
        notes += [f"{name}: {n}" for n in oq.describe(summary)]
    meta = {"key": key, "graph": ENCODER_GRAPH, "graphs": sorted(p.name for p in staging.glob("*.onnx")),
            "stored_bytes": stored, "touched": sorted(touched), "notes": notes}  # fmt: skip
    (staging / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, folder)
    return meta


def verify_encoder(model: Any, encoder: OrtEncoder, exact: bool) -> str:
    """Compare the graphs' outputs with the torch model's on a padded probe batch.

    Raises:
        ValueError: an unquantized graph disagrees with the model (relative error above 1e-3).
    """
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, int(model.config.vocab_size), (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # one padded row
    with torch.inference_mode():
        pairs = [(model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state,
                  encoder.base_model(input_ids=ids, attention_mask=mask).last_hidden_state)]  # fmt: skip
        if encoder.has_head:
            pairs.append((model(input_ids=ids, attention_mask=mask).logits, encoder(ids, mask).logits))
    worst = max(float((r - o).abs().max() / r.abs().max().clamp_min(1e-12)) for r, o in pairs)
    if exact and worst > 1e-3:
        raise ValueError(
            f"the exported encoder's outputs differ from the torch model's by {worst:.2e} (relative max); "
            "expected < 1e-3 for an unquantized export; try attention=sdpa or another opset"
        )
    return f"verified on a padded 2 x 12 probe: max relative error {worst:.1e}"
