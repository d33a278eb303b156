"""Speculative decoding on a real model: where it pays and where it doesn't (issue 18).

Two kinds of prompt, from the packaged *Persuasion*:

- input-grounded (lookup-friendly): a passage, a blank line, then the passage's first sentence again,
  so a model that continues by quoting reuses the passage's tokens;
- open-ended (lookup-hostile): the passage alone, continued freely.

One process, one host; per engine (fp32 eager torch, and ``genai:weights=gguf``: the GenAI build of the
GGUF's own blocks with int8 activations that ``optimize`` picks) and prompt kind, plain greedy decoding
(one token per call: the fastest) and speculation alternate round by round (the order rotated every
round) on the same model; on engines whose calls compute two rows at least (ONNX Runtime), a third side
speculates with the follower table of the calibration novel (*Pride and Prejudice*) guessing in the free
row (``--no-table`` leaves it out). Drafters (``--drafters``): ``lookup`` (prompt lookup) and, for the
torch engine, ``draft`` (a draft model: the GenAI build, whose own tokens may differ: only the target's
are kept). Reports decode tokens/s of each, the paired ratio of medians with its 95% bootstrap interval,
the draft acceptance rate and the tokens produced per forward pass, and checks that speculation gives
the tokens of ``reference_greedy`` (plain greedy decoding in the arithmetic speculation verifies with;
for torch, plain decoding itself) and whether those equal plain one-token decoding's.

Usage: python benchmarks/speculative.py [--model smollm2-135m] [--rounds 7] [--new-tokens 128] [--threads 1]
       [--engines torch,genai] [--drafters lookup,draft] [--no-table]
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
from unbottle.runtime.speculative import corpus_followers, reference_greedy, speculative_greedy
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
    parser.add_argument(
        "--table", action=argparse.BooleanOptionalAction, default=True,
        help="also speculate with the calibration novel's follower table in free rows (min_rows > 1)",
    )  # fmt: skip
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "speculative.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load(args.model)
    engines = {"fp32 eager torch": loaded} if "torch" in args.engines.split(",") else {}
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
    table = corpus_followers(loaded.tokenizer, loaded.model.config.vocab_size) if args.table else None
    for engine, model in engines.items():
        for kind, prompt in prompts(loaded.tokenizer, args.passage_tokens).items():
            for drafter, draft in drafters.items():
                if draft is not None and engine.startswith("genai"):
                    continue  # the draft model is this very build
                key = f"{engine}, {kind}, {drafter}"
                rows[key] = measure(model.model, prompt, args.new_tokens, args.rounds, draft, table)
                print(f"{key}: {rows[key]['summary']}", file=sys.stderr, flush=True)
    out = {"args": vars(args), "rows": rows, "manifest": manifest()}
    write_text_atomic(Path(args.out), json.dumps(out, indent=1, default=str))
    print_table(rows)
    return 0 if all(row["same_tokens"] for row in rows.values()) else 1


def print_table(rows: dict) -> None:
    header = "| engine, prompt, drafter | plain tok/s | speculative tok/s | × plain [95% CI] | acceptance |"
    header += " tokens per pass | guesses kept | same tokens as the reference |"
    print(header + " reference = plain one-token decoding |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, row in rows.items():
        for side, label in (("spec", ""), ("table", " + follower table")):
            if side not in row:
                continue
            f = row[side]
            print(
                f"| {kind}{label} | {row['plain']:.1f} | {f['speculative']:.1f} | {f['ratio']['text']} "
                f"| {f['acceptance']:.0%} | {f['tokens_per_step']:.2f} "
                f"| {f['guesses_kept']:.0%} | {'yes' if row['same_tokens'] else 'NO'} "
                f"| {'yes' if row['reference_is_plain'] else 'no'} |"
            )
        if "table_vs_spec" in row:
            print(f"| {kind}: with the table × without | | | {row['table_vs_spec']['text']} | | | | | |")


def _plain(model, prompt, new: int):
    record: list = []
    rate = decode_once(model, prompt, new, CpuTimer(), record=record)["tokens_per_s"][0]
    return rate, [int(t) for t in torch.cat(record, dim=1)[0]], None


def _spec(model, prompt, new: int, draft, table):
    run = speculative_greedy(model, prompt, new, CpuTimer(), draft, table)
    return sum(run["made"]) / sum(run["steps"]), run["tokens"], run


def measure(model, prompt, new: int, rounds: int, draft=None, table=None) -> dict:
    """Plain decoding and speculation (prompt lookup, or the ``draft`` model; with ``table``, also with
    the follower table's guesses in the free rows) in rotated order for ``rounds`` rounds after a
    warm-up round."""
    sides = {"plain": lambda: _plain(model, prompt, new)}
    sides["spec"] = lambda: _spec(model, prompt, new, draft, None)
    if table is not None and getattr(model, "min_rows", 1) > 1:
        sides["table"] = lambda: _spec(model, prompt, new, draft, table)
    names = list(sides)
    rates: dict[str, list[float]] = {n: [] for n in names}
    runs: dict[str, list[dict]] = {n: [] for n in names if n != "plain"}
    reference = reference_greedy(model, prompt, new)
    same, is_plain = True, True
    for r in range(rounds + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        got = {n: sides[n]() for n in order}
        if r == 0:
            continue
        for n, (rate, tokens, run) in got.items():
            rates[n].append(rate)
            if n == "plain":
                is_plain &= tokens == reference
            else:
                same &= tokens == reference
                runs[n].append(run)
    out = {"plain": statistics.median(rates["plain"]), "same_tokens": same, "reference_is_plain": is_plain}
    out["rounds"] = rates
    for n in runs:
        out[n] = _figures(rates["plain"], rates[n], runs[n])
    if "table" in runs:
        out["table_vs_spec"] = _ratio(rates["spec"], rates["table"])
    out["summary"] = " ".join(f"{n} {out[n]['ratio']['text']}" for n in runs)
    return out


def _ratio(a: list[float], b: list[float]) -> dict:
    r = ratio_of_medians_paired(a, b)
    text = f"×{r.point:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
    return {"point": r.point, "ci_low": r.ci_low, "ci_high": r.ci_high, "text": text}


def _figures(plain: list[float], spec: list[float], runs: list[dict]) -> dict:
    """Speed, paired ratio to plain decoding and draft figures of one speculative side."""
    return {
        "speculative": statistics.median(spec),
        "ratio": _ratio(plain, spec),
        "acceptance": statistics.median(sum(r["accepted"]) / max(1, sum(r["proposed"])) for r in runs),
        "tokens_per_step": statistics.median(sum(r["made"]) / len(r["steps"]) for r in runs),
        "guesses_kept": statistics.median(sum(r["guess_kept"]) / max(1, sum(r["guessed"])) for r in runs),
        "steps": statistics.median(len(r["steps"]) for r in runs),
    }


if __name__ == "__main__":
    sys.exit(main())
