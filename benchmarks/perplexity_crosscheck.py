"""Cross-check: does `unbottle eval` perplexity agree with a plain transformers computation?

Runs the CLI exactly as a user would (`unbottle eval MODEL --eval-text FILE --eval-tokens N
--threads 1 --json`) and, independently, loads the same weights with transformers, tokenises the
same text with the model's own convention (what `tokenizer(text)` adds beyond
`tokenizer(text, add_special_tokens=False)`: Gemma's `<bos>` starts every window, a tokenizer that adds
nothing gets its BOS once at the start), and sums the loss over the same windows unbottle used (its
recorded window and step), following the strided recipe of Hugging Face's perplexity guide (labels
of the prefix and of already-scored tokens masked with -100).

Usage: python benchmarks/perplexity_crosscheck.py [--model smollm2-135m] [--eval-tokens 8192]
    python benchmarks/perplexity_crosscheck.py --model /tmp/models/gemma-3-270m-q4_k_m.gguf --eval-tokens 4096
Writes benchmarks/results/perplexity_crosscheck.json (other models: perplexity_crosscheck-<name>.json);
exits with status 1 if the two differ by more than --tolerance-pct.
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

from unbottle.data import packaged_text

DEFAULT_MODEL = "smollm2-135m"


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


def model_convention(tok: transformers.PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """(prefix the tokenizer adds to every sequence, text ids without special tokens)."""
    full = tok(text)["input_ids"]
    plain = tok(text, add_special_tokens=False)["input_ids"]
    start = next(k for k in range(len(full) - len(plain) + 1) if full[k : k + len(plain)] == plain)
    return full[:start], plain


def plain_transformers(
    folder: str, text: str, eval_tokens: int, window: int, step: int
) -> tuple[float, int, int, list[int]]:
    """Hugging Face's strided perplexity recipe: each window scores only tokens no earlier window scored.

    With a per-sequence prefix from the tokenizer, every window is that prefix followed by
    ``window - len(prefix)`` text tokens, and the prefix is never scored; without one, BOS starts
    the token stream once. Returns (perplexity, scored tokens, windows, prefix).
    """
    torch.set_num_threads(1)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    prefix, ids = model_convention(tok, text)
    if not prefix and tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids  # BOS once: the first window's first input, as HF's guide does
    ids = torch.tensor(ids[: eval_tokens - len(prefix)])  # eval_tokens counts a prefix once
    head = torch.tensor(prefix, dtype=torch.long)
    span = window - len(prefix)  # text tokens per window
    total_nll, scored, prev_end, n_windows = 0.0, 0, 0, 0
    with torch.inference_mode():
        for begin in range(0, ids.numel(), step):
            end = min(begin + span, ids.numel())
            chunk = torch.cat([head, ids[begin:end]]).unsqueeze(0)  # (1, T)
            labels = chunk.clone()
            labels[:, : len(prefix) + max(prev_end - begin, 0)] = -100  # prefix and already-scored tokens
            n_scored = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
            loss = model(chunk, labels=labels).loss  # mean NLL over the scored tokens
            total_nll += loss.item() * n_scored
            scored += n_scored
            prev_end = end
            n_windows += 1
            if end == ids.numel():
                break
    return math.exp(total_nll / scored), scored, n_windows, prefix


def weights_folder(spec: str) -> str:
    """The plain HF folder behind a spec (for GGUF: unbottle's safetensors cache of it)."""
    from unbottle.models import resolve
    from unbottle.sources.gguf_file import GGUFSource
    from unbottle.sources.packaged import PackagedGGUFSource

    source = resolve(spec)
    source.load()  # makes sure a GGUF cache exists
    if isinstance(source, PackagedGGUFSource):
        source = GGUFSource(source.gguf_path())
    return str(source.cache_dir()) if isinstance(source, GGUFSource) else spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model name, folder or GGUF file")
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--tolerance-pct", type=float, default=0.5)
    parser.add_argument("--out", default=None, help="default: results/perplexity_crosscheck[-<model>].json")
    args = parser.parse_args()
    folder = weights_folder(args.model)
    text_file = Path(__file__).parent / "results" / "persuasion.txt"
    text_file.write_text(packaged_text(), encoding="utf-8")
    start = time.perf_counter()
    ours = unbottle_cli(args.model, text_file, args.eval_tokens)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    details = ours["details"]
    plain, scored, n_windows, prefix = plain_transformers(
        folder, packaged_text(), args.eval_tokens, details["window"], details["step"]
    )
    plain_s = time.perf_counter() - start
    text_file.unlink()
    rel = 100 * (ours["value"] / plain - 1)
    lo, hi = ours["ci95"]
    print(
        f"unbottle eval: perplexity {ours['value']:.4f} (95% CI {lo:.3f}–{hi:.3f}), "
        f"{details.get('scored_tokens')} scored tokens, {details.get('n_windows')} windows, "
        f"bos={details.get('bos')} prefix={details.get('prefix_ids')}, {ours_s:.1f} s"
    )
    print(
        f"plain transformers: perplexity {plain:.4f}, {scored} scored tokens, {n_windows} windows, "
        f"per-window prefix {prefix}, {plain_s:.1f} s"
    )
    ok = abs(rel) <= args.tolerance_pct
    print(f"relative difference: {rel:+.4f}% ({'within' if ok else 'OUTSIDE'} ±{args.tolerance_pct}%)")
    out = Path(args.out) if args.out else default_out(args.model)
    doc = {
        "model": args.model,
        "eval_tokens": args.eval_tokens,
        "unbottle": ours,
        "plain_perplexity": plain,
        "plain_scored_tokens": scored,
        "plain_windows": n_windows,
        "plain_window_prefix": prefix,
        "relative_difference_pct": rel,
    }
    out.with_suffix(".tmp").write_text(json.dumps(doc, indent=1))
    out.with_suffix(".tmp").replace(out)
    if not ok:
        sys.exit(1)


def default_out(model: str) -> Path:
    name = "" if model == DEFAULT_MODEL else "-" + Path(model).name.removesuffix(".gguf")
    return Path(__file__).parent / "results" / f"perplexity_crosscheck{name}.json"


if __name__ == "__main__":
    main()
