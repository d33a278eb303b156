"""GGUF files written from tiny transformers models, as llama.cpp's convert_hf_to_gguf.py lays them out.

llama.cpp tensor names, llama architecture metadata, attn_q/attn_k rows permuted for its rotary layout
(which transformers' LlamaTensorProcessor._reverse_permute_weights undoes), a byte-level "gpt2"
tokenizer, and optionally quantized blocks. Tests import it by name (pytest puts tests/ on the path).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from tokenizers import pre_tokenizers

from unbottle.sources.tiny import SPECIALS

_MERGES = ["h e", "t he"]  # so "the" is one token: id 4 + 256 + 1 = 261
_LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: interleave each head's two rotary halves. (rows, cols)"""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_tensor_name(hf_name: str) -> str:
    base = hf_name.removesuffix(".weight")
    if base in _TOP_NAMES:
        return _TOP_NAMES[base] + ".weight"
    _, _, layer, rest = base.split(".", 3)  # model.layers.N.<rest>
    return f"blk.{layer}.{_LAYER_NAMES[rest]}.weight"


def _add_tokenizer(writer: gguf.GGUFWriter, vocab_size: int) -> None:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merged = ["he", "the"]
    tokens = list(SPECIALS) + alphabet + merged
    n_unused = vocab_size - len(tokens)
    tokens += [f"<unused{i}>" for i in range(n_unused)]
    control, normal, unused = 3, 1, 5  # llama.cpp token types
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [control] * len(SPECIALS) + [normal] * (len(alphabet) + len(merged)) + [unused] * n_unused
    )
    writer.add_token_merges(_MERGES)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(3)


def write_llama_gguf(
    model: torch.nn.Module, path: Path, arch: str = "llama", types: dict[str, str] | None = None
) -> Path:
    """Write a transformers llama model as a GGUF file laid out like llama.cpp's converter.

    ``types`` maps a GGUF tensor-name fragment (``"attn_q"``, ``"token_embd"``) to the block type its
    2-D weights are quantized to with ``gguf.quants`` (``"Q4_1"``, ...); everything else is F32.
    """
    c = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(c.vocab_size)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    _add_tokenizer(writer, c.vocab_size)
    for name, tensor in model.state_dict().items():
        w = tensor.numpy()
        if ".q_proj." in name:
            w = _llama_cpp_permute(w, c.num_attention_heads)
        elif ".k_proj." in name:
            w = _llama_cpp_permute(w, c.num_key_value_heads)
        gguf_name = _gguf_tensor_name(name)
        qtype = next((q for part, q in (types or {}).items() if f"{part}." in gguf_name), None)
        w = np.ascontiguousarray(w, dtype=np.float32)
        if qtype is None or w.ndim != 2:
            writer.add_tensor(gguf_name, w)
            continue
        kind = gguf.GGMLQuantizationType[qtype]
        writer.add_tensor(gguf_name, gguf.quants.quantize(w, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
