"""Speculative decoding on a real model: where it pays and where it doesn't (issue 18).

Two kinds of prompt, from the packaged *Persuasion*:

- input-grounded (lookup-friendly): a passage, a blank line, then the passage's first sentence again,
  so a model that continues by quoting reuses the passage's tokens;
- open-ended (lookup-hostile): the passage alone, continued freely.

One process, one host; per engine (fp32 eager torch, and ``genai:weights=gguf``: the GenAI build of
the GGUF's own blocks with int8 activations that ``optimize`` picks) and prompt kind, plain greedy
decoding (one token per call: the fastest) and speculation alternate round by round (the order swapped
every round) on the same model. Drafters (``--drafters``): ``lookup`` (prompt lookup) and, for the torch
engine, ``draft`` (a draft model: the GenAI build, whose own tokens may differ: only the target's are
kept). Reports decode tokens/s of each, the paired ratio of medians with its 95% bootstrap interval,
the draft acceptance rate and the tokens produced per forward pass, and checks that speculation gives
the tokens of ``reference_greedy`` (plain greedy decoding in the arithmetic speculation verifies with;
for torch, plain decoding itself) and whether those equal plain one-token decoding's.

Usage: python benchmarks/speculative.py [--model smollm2-135m] [--rounds 7] [--new-tokens 128] [--threads 1]
       [--engines torch,genai] [--drafters lookup,draft]
Writes benchmarks/results/speculative.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from unbottle.benchmarking.scenarios import decode_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.core.env import manifest
from unbottle.core.paths import write_text_atomic
from unbottle.data import EVAL_TEXT, packaged_text
from unbottle.models import load
from unbottle.passes import apply_, parse_pass
from unbottle.runtime.speculative import reference_greedy, speculative_greedy
from unbottle.stats.paired import ratio_of_medians_paired


def prompts(tokenizer, passage_tokens: int) -> dict[str, torch.Tensor]:
    text = packaged_text(EVAL_TEXT)
    start = text.index("Sir Walter Elliot")
    passage = text[start : start + 6 * passage_tokens]
    ids = tokenizer(passage)["input_ids"][:passage_tokens]
    passage = tokenizer.decode(ids)
    first = passage.split(". ")[0] + "."
    return {
        "input-grounded (passage, then its first sentence again)": tokenizer(
            passage + "\n\n" + first, return_tensors="pt"
        )["input_ids"],
        "open-ended (the passage, continued)": tokenizer(passage, return_tensors="pt")["input_ids"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--passage-tokens", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engines", default="torch,genai")
    parser.add_argument("--drafters", default="lookup,draft")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "speculative.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load(args.model)
    engines = {"fp32 eager torch": loaded}
    fast = f"genai:weights=gguf,threads={args.threads}"  # int8 activations: optimize's winner
    wanted = "genai" in args.engines.split(",") or "draft" in args.drafters.split(",")
    built = apply_(loaded, [parse_pass(fast)])[0] if wanted else None  # the GenAI engine, or a draft
    if "genai" in args.engines.split(","):
        engines["genai:weights=gguf (unbottle's loop)"] = built
    drafters = {"lookup": None}
    if "draft" in args.drafters.split(","):
        drafters["draft=genai:weights=gguf (int8 activations)"] = built.model
    drafters = {k: v for k, v in drafters.items() if k != "lookup" or "lookup" in args.drafters.split(",")}
    rows = {}
    for engine, model in engines.items():
        for kind, prompt in prompts(loaded.tokenizer, args.passage_tokens).items():
            for drafter, draft in drafters.items():
                if draft is not None and engine.startswith("genai"):
                    continue  # the draft model is this very build
                key = f"{engine}, {kind}, {drafter}"
                rows[key] = measure(model.model, prompt, args.new_tokens, args.rounds, draft)
                print(f"{key}: {rows[key]['summary']}", file=sys.stderr, flush=True)
    out = {"args": vars(args), "rows": rows, "manifest": manifest()}
    write_text_atomic(Path(args.out), json.dumps(out, indent=1, default=str))
    header = "| engine, prompt, drafter | plain tok/s | speculative tok/s | × plain [95% CI] | acceptance |"
    print(header + " tokens per pass | same tokens as the reference | reference = plain one-token decoding |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, row in rows.items():
        r = row["ratio"]
        print(
            f"| {kind} | {row['plain']:.1f} | {row['speculative']:.1f} | ×{r['point']:.2f} "
            f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {row['acceptance']:.0%} "
            f"| {row['tokens_per_step']:.2f} | {'yes' if row['same_tokens'] else 'NO'} "
            f"| {'yes' if row['reference_is_plain'] else 'no'} |"
        )
    return 0 if all(row["same_tokens"] for row in rows.values()) else 1


def measure(model, prompt, new: int, rounds: int, draft=None) -> dict:
    """Plain and speculative decoding (prompt lookup, or the ``draft`` model) alternating for ``rounds``
    rounds after a warm-up round."""
    plain, spec, accept, per_step, same = [], [], [], [], True
    reference = reference_greedy(model, prompt, new)
    is_plain = True
    for r in range(rounds + 1):
        got = {}
        for side in ("plain", "spec") if r % 2 == 0 else ("spec", "plain"):
            if side == "plain":
                record: list = []
                rate = decode_once(model, prompt, new, CpuTimer(), record=record)["tokens_per_s"][0]
                got["plain"] = (rate, [int(t) for t in torch.cat(record, dim=1)[0]])
            else:
                run = speculative_greedy(model, prompt, new, CpuTimer(), draft)
                made = sum(run["made"])
                got["spec"] = (made / sum(run["steps"]), run["tokens"], run)
        if r == 0:
            continue
        plain.append(got["plain"][0])
        spec.append(got["spec"][0])
        same &= got["spec"][1] == reference
        is_plain &= got["plain"][1] == reference
        run = got["spec"][2]
        accept.append(sum(run["accepted"]) / max(1, sum(run["proposed"])))
        per_step.append(sum(run["made"]) / len(run["steps"]))
    ratio = ratio_of_medians_paired(plain, spec)
    return {
        "plain": statistics.median(plain),
        "speculative": statistics.median(spec),
        "ratio": {"point": ratio.point, "ci_low": ratio.ci_low, "ci_high": ratio.ci_high},
        "acceptance": statistics.median(accept),
        "tokens_per_step": statistics.median(per_step),
        "same_tokens": same,
        "reference_is_plain": is_plain,
        "rounds": {"plain": plain, "speculative": spec},
        "summary": f"×{ratio.point:.2f} [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}]",
    }


if __name__ == "__main__":
    sys.exit(main())
