"""unbottle's speculative winner against llama.cpp's own prompt-lookup decoding, on the same GGUF.

A user who wants speculation on CPU can have it from llama.cpp too: llama-cpp-python's
``LlamaPromptLookupDecoding`` drafts from n-gram matches as unbottle's ``lookup`` does, and its
``generate`` verifies the drafts in one batch. So the fair comparison for speculation is engine against
engine, each with and without its own lookup:

- unbottle: ``genai:weights=gguf`` (the build ``optimize`` picks), plain one-token decoding and
  ``speculative_greedy`` (prompt lookup, up to 8 tokens);
- llama.cpp (llama-cpp-python 0.3.36) on the packaged GGUF as shipped, greedy (``top_k=1``) through
  ``Llama.generate``, without a draft model and with ``LlamaPromptLookupDecoding(max_ngram_size=3,
  num_pred_tokens=8)`` (``logits_all=True``, which speculation there needs, in both).

Prompts: ``speculative.py``'s input-grounded and open-ended ones. Every round runs the four in a rotated
order after a warm-up round; decode tokens/s excludes the first token (prompt and first token timed
apart). Ratios are paired bootstrap ratios of medians over the rounds (95%).

Usage: python benchmarks/speculative_anchor.py [--rounds 5] [--threads 1]
Writes benchmarks/results/speculative_anchor.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from speculative import prompts  # noqa: E402

from unbottle.benchmarking.scenarios import decode_once  # noqa: E402
from unbottle.benchmarking.timing import CpuTimer  # noqa: E402
from unbottle.core.env import manifest  # noqa: E402
from unbottle.core.paths import write_text_atomic  # noqa: E402
from unbottle.models import load  # noqa: E402
from unbottle.passes import apply_, parse_pass  # noqa: E402
from unbottle.passes.apply import gguf_source  # noqa: E402
from unbottle.runtime.speculative import speculative_greedy  # noqa: E402
from unbottle.stats.paired import ratio_of_medians_paired  # noqa: E402

SIDES = ("unbottle plain", "unbottle lookup", "llama.cpp plain", "llama.cpp lookup")


def llama_engines(path: Path, threads: int, context: int) -> dict:
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    common = dict(n_threads=threads, n_threads_batch=threads, n_ctx=context, n_batch=512, logits_all=True)
    return {
        "plain": Llama(str(path), verbose=False, **common),
        "lookup": Llama(
            str(path),
            verbose=False,
            draft_model=LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=8),
            **common,
        ),
    }


def llama_decode(llm, prompt: list[int], new: int) -> tuple[float, list[int]]:
    """Decode tokens/s after the first token, and the tokens, greedy through ``generate``."""
    llm.reset()
    tokens: list[int] = []
    first = time.perf_counter()
    for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        tokens.append(int(token))
        if len(tokens) == 1:
            first = time.perf_counter()
        if len(tokens) == new:
            break
    return (new - 1) / (time.perf_counter() - first), tokens


def one_round(model, llamas: dict, ids: torch.Tensor, new: int, order: list[str]) -> dict[str, tuple]:
    got = {}
    for side in order:
        if side == "unbottle plain":
            record: list = []
            rate = decode_once(model, ids, new, CpuTimer(), record=record)["tokens_per_s"][0]
            got[side] = (rate, [int(t) for t in torch.cat(record, dim=1)[0]])
        elif side == "unbottle lookup":
            run = speculative_greedy(model, ids, new, CpuTimer())
            got[side] = (sum(run["made"]) / sum(run["steps"]), run["tokens"])
        else:
            got[side] = llama_decode(llamas[side.split()[1]], ids[0].tolist(), new)
    return got


def measure(model, llamas: dict, ids: torch.Tensor, new: int, rounds: int) -> dict:
    rates: dict[str, list[float]] = {s: [] for s in SIDES}
    tokens: dict[str, list[int]] = {}
    for r in range(rounds + 1):
        order = list(SIDES[r % 4 :] + SIDES[: r % 4])
        got = one_round(model, llamas, ids, new, order)
        if r == 0:
            continue
        for side, (rate, toks) in got.items():
            rates[side].append(rate)
            tokens[side] = toks
    pairs = {
        "unbottle lookup / unbottle plain": ("unbottle plain", "unbottle lookup"),
        "llama.cpp lookup / llama.cpp plain": ("llama.cpp plain", "llama.cpp lookup"),
        "unbottle plain / llama.cpp plain": ("llama.cpp plain", "unbottle plain"),
        "unbottle lookup / llama.cpp lookup": ("llama.cpp lookup", "unbottle lookup"),
    }
    ratios = {}
    for name, (a, b) in pairs.items():
        est = ratio_of_medians_paired(rates[a], rates[b])
        ratios[name] = [est.point, est.ci_low, est.ci_high]
    return {
        "medians": {s: statistics.median(v) for s, v in rates.items()},
        "ratios": ratios,
        "llama_lookup_same_tokens": tokens["llama.cpp lookup"] == tokens["llama.cpp plain"],
        "rounds": rates,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "speculative_anchor.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load(args.model)
    model = apply_(base, [parse_pass(f"genai:weights=gguf,threads={args.threads}")])[0].model
    llamas = llama_engines(gguf_source(base.info), args.threads, 1024)
    rows = {}
    for kind, ids in prompts(base.tokenizer, 192).items():
        rows[kind] = measure(model, llamas, ids, args.new_tokens, args.rounds)
        print(kind, json.dumps(rows[kind]["ratios"]), file=sys.stderr, flush=True)
    doc = {"args": vars(args), "rows": rows, "manifest": manifest()}
    write_text_atomic(Path(args.out), json.dumps(doc, indent=1, default=str))
    print("| prompt | " + " | ".join(f"{s} tok/s" for s in SIDES) + " | unbottle lookup ÷ llama.cpp lookup |"
          " unbottle plain ÷ llama.cpp plain | llama.cpp's lookup ÷ its plain |")  # fmt: skip
    print("|---" * 8 + "|")
    for kind, row in rows.items():
        m, r = row["medians"], row["ratios"]

        def ci(v: list[float]) -> str:
            return f"×{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"

        cells = [f"{m[s]:.1f}" for s in SIDES] + [
            ci(r[k])
            for k in (
                "unbottle lookup / llama.cpp lookup",
                "unbottle plain / llama.cpp plain",
                "llama.cpp lookup / llama.cpp plain",
            )
        ]
        print(f"| {kind.split(' (')[0]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
