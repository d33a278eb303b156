"""Training strategies on a small Llama trained on the packaged Austen novels, interleaved.

A 4-layer, 256-wide Llama with SmolLM2's tokenizer (49,152 tokens), initialised from a seed, trained
with each strategy from the same starting state in rotating segments (``unbottle.training.compare``).
The reference is the naive pipeline: fp32 and on-the-fly tokenisation. Prints the comparison as JSON.

    .venv/bin/python benchmarks/train.py --threads 1 --rounds 3 --steps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unbottle.models import load
from unbottle.training.compare import compare_strategies
from unbottle.training.loader import LoaderConfig
from unbottle.training.session import datasets
from unbottle.training.spec import TrainSpec
from unbottle.training.trainer import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--strategies", default="naive,base,bf16,bf16-chunked,fused,bf16-fused,bf16-fused-compile,workers"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = load("smollm2-135m").tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    cached, _ = datasets(None, args.seq_len, "cache", tokenizer)
    naive, _ = datasets(None, args.seq_len, "on-the-fly", tokenizer)
    cfg = TrainConfig(max_steps=10**9, warmup_steps=args.steps, lr=1e-3)
    with tempfile.TemporaryDirectory() as tmp:
        loader = LoaderConfig(batch_size=args.batch_size)
        spec = TrainSpec("benchmark", None, args.seq_len, "cache", cfg, loader, Path(tmp))
        pipelines = {"cache": cached, "on-the-fly": naive}
        names = args.strategies.split(",")
        doc = compare_strategies(model, pipelines, names, spec, args.rounds, args.steps)
    summary = {}
    for name, e in doc["strategies"].items():
        row = {"tokens_per_s": statistics.median(e["tokens_per_s"]), "final_loss": e["losses"][-1]}
        if "speed" in e:
            pct = e["speed"]["pct"]
            row["x_naive"] = [1 + pct[k] / 100 for k in ("point", "ci_low", "ci_high")]
            row["loss_change"] = e["loss_change"]
        summary[name] = row
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": params, "threads": args.threads, "summary": summary, "compare": doc}))


if __name__ == "__main__":
    main()
