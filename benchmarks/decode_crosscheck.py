"""Cross-check: does `unbottle bench`'s decode tokens/s agree with a plain `model.generate` loop?

Both run in this one process on the same loaded model, interleaved round by round (ours, then
generate) so machine drift hits both. The generate side isolates decode speed by differencing:
decode tok/s = (K - 1) / (t(generate K new tokens) - t(generate 1 new token)), which removes the
prefill and set-up cost exactly as our decode metric excludes time-to-first-token.

Usage: python benchmarks/decode_crosscheck.py [--model smollm2-135m] [--threads 1,2] [--rounds 7]
Writes benchmarks/results/decode_crosscheck.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from unbottle.benchmarking import BenchConfig, benchmark
from unbottle.core.env import manifest
from unbottle.data.prompts import make_prompts
from unbottle.models import load


def generate_seconds(model, prompt, new_tokens: int) -> float:
    pad = model.generation_config.pad_token_id or model.generation_config.eos_token_id
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        return time.perf_counter() - start


def one_thread_count(loaded, threads: int, rounds: int, new_tokens: int, prompt_length: int) -> dict:
    torch.set_num_threads(threads)
    config = BenchConfig(
        scenarios=("decode",),
        batch_sizes=(1,),
        new_tokens=new_tokens,
        decode_prompt_length=prompt_length,
        threads=threads,
        warmup=0,
        min_repeats=1,
        min_time_s=0.0,
    )
    prompt = make_prompts(loaded.tokenizer, loaded.model.config.vocab_size, 1, prompt_length, seed=0)
    benchmark(loaded, config)  # warm-up of both paths
    generate_seconds(loaded.model, prompt, 2)
    ours, plain = [], []
    for _ in range(rounds):
        result = benchmark(loaded, config)
        ours += next(m for m in result.measurements if m.name == "decode.tokens_per_s").samples
        t_k = generate_seconds(loaded.model, prompt, new_tokens)
        t_1 = generate_seconds(loaded.model, prompt, 1)
        plain.append((new_tokens - 1) / (t_k - t_1))
    ratios = [a / b for a, b in zip(ours, plain, strict=True)]
    return {
        "threads": threads,
        "rounds": rounds,
        "unbottle_decode_tokens_per_s": ours,
        "generate_decode_tokens_per_s": plain,
        "median_unbottle": statistics.median(ours),
        "median_generate": statistics.median(plain),
        "median_ratio_unbottle_over_generate": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "decode_crosscheck.json"))
    args = parser.parse_args()
    loaded = load(args.model)
    rows = [
        one_thread_count(loaded, int(t), args.rounds, args.new_tokens, args.prompt_length)
        for t in args.threads.split(",")
    ]
    print("| threads | unbottle decode tok/s | generate decode tok/s | ratio (median of rounds) |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['threads']} | {r['median_unbottle']:.2f} | {r['median_generate']:.2f} "
            f"| {r['median_ratio_unbottle_over_generate']:.3f} |"
        )
    doc = {
        "model": args.model,
        "new_tokens": args.new_tokens,
        "prompt_length": args.prompt_length,
        "results": rows,
        "manifest": manifest(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
