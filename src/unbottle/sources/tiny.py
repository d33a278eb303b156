"""Tiny random-initialised models built from a config: fast, seeded, deterministic.

They exist for tests and quick runs of every verb; the same seed gives bit-identical weights. There
is one per causal-LM family the passes are tested on, plus a masked LM and a sequence classifier.
Their tokenizer is a byte-level one built in code (256 byte tokens + 4 specials), so they read any
text without files.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from unbottle.sources.base import (
    Loaded,
    ModelInfo,
    ModelSource,
    Task,
    auto_class,
    count_parameters,
    torch_dtype,
)

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")

# Token ids of the byte tokenizer: vocab 512 leaves room for its 260 tokens.
_IDS: dict[str, Any] = dict(vocab_size=512, bos_token_id=1, eos_token_id=2, pad_token_id=3)
# The Llama-shaped decoders (Mistral, Qwen, Gemma, Phi-3, GPT-NeoX) share these sizes.
_DECODER: dict[str, Any] = dict(
    _IDS,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)

_BERT: dict[str, Any] = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=512,
    pad_token_id=3,
)

# name → (task, transformers config class, config kwargs). tiny-llama and tiny-bert are as first
# written (tests depend on their weights); the others cover the causal-LM families users run, each
# with the feature that makes it different: sliding windows shorter than test sequences (Mistral;
# Gemma 2 alternating with full layers and softcapped; Gemma 3 two sliding layers to one full),
# q/k norms (Qwen3, Gemma 3), fused qkv (Phi-3, GPT-NeoX), partial rotary (GPT-NeoX), Conv1D
# layers (GPT-2), learned positions with an offset (OPT), tied embeddings (Qwen, Gemma, GPT-2, OPT).
TINY_MODELS: dict[str, tuple[Task, str, dict[str, Any]]] = {
    "tiny-llama": (
        "causal-lm",
        "LlamaConfig",
        dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
            tie_word_embeddings=False,
        ),
    ),
    "tiny-mistral": ("causal-lm", "MistralConfig", dict(_DECODER, sliding_window=8)),
    "tiny-qwen2": ("causal-lm", "Qwen2Config", dict(_DECODER, tie_word_embeddings=True)),
    "tiny-qwen3": ("causal-lm", "Qwen3Config", dict(_DECODER, head_dim=16, tie_word_embeddings=True)),
    "tiny-gemma2": (
        "causal-lm",
        "Gemma2Config",
        # Softcaps scaled to these random weights (logits ~0.6, attention scores ~0.1) so the tanh
        # really bends them: the real ones (30, 50) would leave tiny logits untouched.
        dict(
            _DECODER,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=8,
            final_logit_softcapping=0.5,
            attn_logit_softcapping=0.1,
        ),
    ),
    "tiny-gemma3": (
        "causal-lm",
        "Gemma3TextConfig",
        dict(
            _DECODER,
            num_hidden_layers=3,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=8,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        ),
    ),
    "tiny-phi3": ("causal-lm", "Phi3Config", dict(_DECODER)),
    "tiny-gpt2": (
        "causal-lm",
        "GPT2Config",
        dict(_IDS, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=1024),
    ),
    "tiny-gpt-neox": (
        "causal-lm",
        "GPTNeoXConfig",
        dict({k: v for k, v in _DECODER.items() if k != "num_key_value_heads"}, rotary_pct=0.25),
    ),
    "tiny-opt": (
        "causal-lm",
        "OPTConfig",
        dict(
            _IDS,
            hidden_size=64,
            ffn_dim=128,
            word_embed_proj_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=2048,
        ),
    ),
    "tiny-bert": ("masked-lm", "BertConfig", _BERT),
    "tiny-bert-classifier": ("sequence-classification", "BertConfig", dict(_BERT, num_labels=3)),
}

# What each tiny model stands for, shown by ``unbottle models``.
TINY_NOTES: dict[str, str] = {
    "tiny-llama": "Llama",
    "tiny-mistral": "Mistral, sliding window 8",
    "tiny-qwen2": "Qwen2, q/k/v biases, tied embeddings",
    "tiny-qwen3": "Qwen3, q/k norms, tied embeddings",
    "tiny-gemma2": "Gemma 2, sliding window 8 alternating with full layers, softcapped logits",
    "tiny-gemma3": "Gemma 3 text, two sliding-window (8) layers then one full, q/k norms",
    "tiny-phi3": "Phi-3, fused qkv and gate/up projections",
    "tiny-gpt2": "GPT-2, Conv1D layers, learned positions",
    "tiny-gpt-neox": "GPT-NeoX, fused qkv, partial rotary, parallel residual",
    "tiny-opt": "OPT, learned positions with an offset of 2",
    "tiny-bert": "BERT",
    "tiny-bert-classifier": "BERT with a 3-label sequence-classification head",
}


def byte_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges: every UTF-8 byte is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({ch: i + len(SPECIALS) for i, ch in enumerate(alphabet)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


class TinySource(ModelSource):
    """A model built from a small config with seeded random weights."""

    kind = "tiny"

    def __init__(self, spec: str, seed: int = 0) -> None:
        super().__init__(spec)
        self.task, self.config_class, self.config_kwargs = TINY_MODELS[spec]
        self.seed = seed

    def load(self, dtype: str | None = None) -> Loaded:
        import transformers

        start = time.perf_counter()
        config = getattr(transformers, self.config_class)(**self.config_kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = auto_class(self.task).from_config(config)
        model = model.to(torch_dtype(dtype)).eval()
        info = ModelInfo(
            spec=self.spec,
            source_kind=self.kind,
            task=self.task,
            architecture=config.model_type,
            n_parameters=count_parameters(model),
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            load_s=time.perf_counter() - start,
            notes=[f"random weights, seed {self.seed}"],
        )
        return Loaded(model=model, tokenizer=byte_tokenizer(), info=info)
