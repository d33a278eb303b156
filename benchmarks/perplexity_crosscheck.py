"""Cross-check: does `unbottle eval` perplexity agree with a plain transformers computation?

Runs the CLI exactly as a user would (`unbottle eval MODEL --eval-text FILE --eval-tokens N
--threads 1 --json`) and, independently, loads the same weights with transformers, tokenises the
same text, prepends BOS once (as unbottle says it does), and sums the loss over the same windows
unbottle used (its recorded window and step), following the strided recipe of Hugging Face's
perplexity guide (labels of already-scored tokens masked with -100).

Usage: python benchmarks/perplexity_crosscheck.py [--model smollm2-135m] [--eval-tokens 8192]
Writes benchmarks/results/perplexity_crosscheck.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

from unbottle.bench.prompts import corpus_text


def unbottle_cli(model: str, text_file: Path, eval_tokens: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "unbottle.cli",
        "eval",
        model,
        "--eval-text",
        str(text_file),
        "--eval-tokens",
        str(eval_tokens),
        "--threads",
        "1",
        "--json",
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return next(e for e in doc["evals"] if e["metric"] == "perplexity")


def plain_transformers(folder: str, text: str, eval_tokens: int, window: int, step: int) -> tuple[float, int]:
    """Hugging Face's strided perplexity recipe: each window scores only tokens no earlier window scored."""
    torch.set_num_threads(1)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    ids = torch.tensor(ids[:eval_tokens])
    total_nll, scored, prev_end = 0.0, 0, 0
    with torch.inference_mode():
        for begin in range(0, ids.numel(), step):
            end = min(begin + window, ids.numel())
            target_len = end - prev_end  # tokens not scored by an earlier window
            chunk = ids[begin:end].unsqueeze(0)
            labels = chunk.clone()
            labels[:, :-target_len] = -100
            n_scored = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
            loss = model(chunk, labels=labels).loss  # mean NLL over the scored tokens
            total_nll += loss.item() * n_scored
            scored += n_scored
            prev_end = end
            if end == ids.numel():
                break
    return math.exp(total_nll / scored), scored


def weights_folder(spec: str) -> str:
    """The plain HF folder behind a spec (for GGUF: unbottle's safetensors cache of it)."""
    from unbottle.sources import resolve
    from unbottle.sources.gguf_file import GGUFSource
    from unbottle.sources.packaged import PackagedGGUFSource

    source = resolve(spec)
    source.load()  # makes sure a GGUF cache exists
    if isinstance(source, PackagedGGUFSource):
        source = GGUFSource(source.gguf_path())
    return str(source.cache_dir()) if isinstance(source, GGUFSource) else spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "perplexity_crosscheck.json")
    )
    args = parser.parse_args()
    folder = weights_folder(args.model)
    text_file = Path(__file__).parent / "results" / "persuasion.txt"
    text_file.write_text(corpus_text(), encoding="utf-8")
    start = time.perf_counter()
    ours = unbottle_cli(args.model, text_file, args.eval_tokens)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    details = ours["details"]
    plain, scored = plain_transformers(
        folder, corpus_text(), args.eval_tokens, details["window"], details["step"]
    )
    plain_s = time.perf_counter() - start
    text_file.unlink()
    rel = 100 * (ours["value"] / plain - 1)
    lo, hi = ours["ci95"]
    print(
        f"unbottle eval: perplexity {ours['value']:.4f} (95% CI {lo:.3f}–{hi:.3f}), "
        f"{ours['details'].get('scored_tokens')} scored tokens, {ours_s:.1f} s"
    )
    print(f"plain transformers: perplexity {plain:.4f}, {scored} scored tokens, {plain_s:.1f} s")
    print(f"relative difference: {rel:+.4f}%")
    out = Path(args.out)
    doc = {
        "model": args.model,
        "eval_tokens": args.eval_tokens,
        "unbottle": ours,
        "plain_perplexity": plain,
        "plain_scored_tokens": scored,
        "relative_difference_pct": rel,
    }
    out.with_suffix(".tmp").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".tmp").replace(out)


if __name__ == "__main__":
    main()
