"""Tiny random-initialised models built from a config: fast, seeded, deterministic.

They exist for tests and quick runs of every verb; the same seed gives bit-identical weights.
Their tokenizer is a byte-level one built in code (256 byte tokens + 4 specials), so they read
any text without files.
"""

from __future__ import annotations

import time
from typing import Any

from unbottle.sources.base import Loaded, ModelInfo, ModelSource, Task, count_parameters, torch_dtype

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")

# name → (task, transformers config class, config kwargs)
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
    "tiny-bert": (
        "masked-lm",
        "BertConfig",
        dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=512,
            pad_token_id=3,
        ),
    ),
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
        import torch
        import transformers

        from unbottle.sources.base import auto_class

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
