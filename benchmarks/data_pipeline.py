"""Token cache vs on-the-fly tokenisation for smollm2-135m's tokenizer on the packaged Austen corpus.

Builds the cache (first time: tokenises the five novels; later: reuses the file), then reads the
same number of 512+1-token samples from each dataset in interleaved rounds and reports samples/s
medians and their ratio. One JSON line.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from unbottle.models import load
from unbottle.training.data import OnTheFlyDataset, TokenDataset, default_corpora, token_cache


def rate(ds, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - start)


def main(seq_len: int = 512, n: int = 200, rounds: int = 5) -> None:
    tok = load("smollm2-135m").tokenizer
    train, _ = default_corpora()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path, built = token_cache(train, tok, seq_len, Path(tmp))
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        _, built_again = token_cache(train, tok, seq_len, Path(tmp))
        reuse_s = time.perf_counter() - t
        cached, naive = (
            TokenDataset(path, seq_len),
            OnTheFlyDataset(train, tok, seq_len, n_items=len(TokenDataset(path, seq_len))),
        )
        a, b = [], []
        for _ in range(rounds):
            a.append(rate(cached, n))
            b.append(rate(naive, n))
        print(json.dumps({
            "tokens": int(cached.tokens.size), "samples": len(cached), "build_s": build_s, "built": built,
            "reuse_s": reuse_s, "reused": not built_again,
            "cached_samples_per_s": statistics.median(a), "on_the_fly_samples_per_s": statistics.median(b),
            "ratio": statistics.median(x / y for x, y in zip(a, b, strict=True)),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
