"""Each optimisation pass alone, and compositions, on one model: speed, memory, size, perplexity.

All candidates are applied in one process and measured **interleaved**: every round runs one
decode repeat and one prefill repeat of every candidate in turn (order rotated each round), so
machine drift hits all of them alike. Ratios against fp32 eager use the paired-by-round bootstrap
of `unbottle ab`. Perplexity changes are paired over the same windows. Peak memory is measured per
candidate in a fresh subprocess (load + apply + one decode), so candidates don't share a peak.

Usage: python benchmarks/passes.py [--model smollm2-135m] [--threads 1,2] [--rounds 5]
       [--only NAME,...]
Writes benchmarks/results/passes.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from unbottle.benchmarking.scenarios import decode_once, prefill_once
from unbottle.benchmarking.timing import CpuTimer
from unbottle.comparison.accuracy import compare_eval
from unbottle.comparison.speed import compare_samples
from unbottle.data.prompts import make_prompts
from unbottle.evaluation import perplexity
from unbottle.models import load
from unbottle.passes import apply_, parse_pass, unavailable

CANDIDATES: dict[str, list[str]] = {
    "fp32 eager": [],
    "bf16": ["precision"],
    "dynamic-int8": ["dynamic-int8"],
    "wo-int8": ["wo-int8"],
    "wo-int4 g32": ["wo-int4:group_size=32"],
    "prune 2:4": ["prune:pattern=2:4"],
    "prune-structured mlp 20%": ["prune-structured:target=mlp,amount=0.2"],
    "lowrank 0.9": ["lowrank:energy=0.9"],
    "wo-int4 g32 + wo-int8": ["wo-int4:group_size=32", "wo-int8"],
    "compile": ["compile"],
    "onnx fp32": ["onnx"],
    "onnx int8-block": ["onnx:quantize=int8-block"],
    "onnx int8-block + lm_head": ["onnx:quantize=int8-block,exclude="],
    "onnx int4-block": ["onnx:quantize=int4-block"],
}
# Compiling the whole 30-layer model takes minutes per candidate on 2 cores; opt in with --only.
SLOW = {"compile"}


def build(base, passes: list[str]):
    if not passes:
        return base, 0, ""
    configs = [parse_pass(p) for p in passes]
    for c in configs:
        if reasons := unavailable(c):
            return None, 0, "; ".join(reasons)
    loaded, reports = apply_(base, configs)
    return loaded, reports[-1].bytes_after, ""


def peak_rss_mib(model: str, passes: list[str], threads: int) -> float | None:
    """Load, apply and decode once in a fresh process; return its peak RSS (VmHWM)."""
    code = (
        "import re,torch,sys; from unbottle.models import load;"
        "from unbottle.passes import apply_, parse_pass;"
        "from unbottle.benchmarking.scenarios import decode_once;"
        "from unbottle.benchmarking.timing import CpuTimer;"
        f"torch.set_num_threads({threads}); l=load({model!r}); ps={passes!r};"
        "l=apply_(l,[parse_pass(p) for p in ps],copy_model=False)[0] if ps else l;"
        "decode_once(l.model, torch.randint(0,100,(1,32)), 8, CpuTimer());"
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    return int(proc.stdout.strip().splitlines()[-1]) / 1024 if proc.returncode == 0 else None


def measure_speed(models: dict, tokenizer, threads: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    torch.set_num_threads(threads)
    vocab = next(iter(models.values())).model.config.vocab_size
    decode_prompt = make_prompts(tokenizer, vocab, 1, 32, seed=0)
    prefill_prompt = make_prompts(tokenizer, vocab, 1, 128, seed=1)
    names = list(models)
    for name in names:  # warm-up (and compilation) outside the measured rounds
        decode_once(models[name].model, decode_prompt, 64, CpuTimer())
        prefill_once(models[name].model, prefill_prompt, CpuTimer())
    values: dict[str, dict[str, list[float]]] = {n: {"decode": [], "prefill": []} for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            m = models[name].model
            values[name]["decode"] += decode_once(m, decode_prompt, 64, CpuTimer())["tokens_per_s"]
            values[name]["prefill"] += prefill_once(m, prefill_prompt, CpuTimer())["tokens_per_s"]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--only", default="")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "passes.json"))
    args = parser.parse_args()
    only = args.only.split(",") if args.only else []
    wanted = [n for n in CANDIDATES if n == "fp32 eager" or (n in only if only else n not in SLOW)]
    torch.set_num_threads(int(args.threads.split(",")[0]))
    base = load(args.model)
    models, sizes, skipped = {}, {}, {}
    for name in wanted:
        start = time.perf_counter()
        loaded, size, why = build(base, CANDIDATES[name])
        if loaded is None:
            skipped[name] = why
            continue
        models[name], sizes[name] = loaded, size
        print(f"built {name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    base_bytes = sum(
        p.numel() * p.element_size() for p in {id(p): p for p in base.model.parameters()}.values()
    )
    sizes["fp32 eager"] = base_bytes
    ppl = {name: perplexity(m, eval_tokens=args.eval_tokens) for name, m in models.items()}
    speed = {
        int(t): measure_speed(models, base.tokenizer, int(t), args.rounds) for t in args.threads.split(",")
    }
    rows = []
    for name in models:
        row = {
            "candidate": name,
            "passes": CANDIDATES[name],
            "model_mib": sizes[name] / 2**20,
            "perplexity": ppl[name].value,
            "perplexity_change_pct": compare_eval(ppl["fp32 eager"], ppl[name]).pct.to_dict(),
            "peak_rss_mib": peak_rss_mib(args.model, CANDIDATES[name], 1),
        }
        for t, values in speed.items():
            for metric in ("decode", "prefill"):
                a, b = values["fp32 eager"][metric], values[name][metric]
                cmp = compare_samples(metric, "tokens/s", True, a, b, paired=True)
                row[f"{metric}_tok_s_t{t}"] = statistics.median(b)
                row[f"{metric}_speedup_t{t}"] = {
                    k: 1 + v / 100
                    for k, v in cmp.pct.to_dict().items()
                    if k in ("point", "ci_low", "ci_high")
                }
        rows.append(row)
    print_table(rows, list(speed), skipped)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".tmp").write_text(
        json.dumps({"model": args.model, "rounds": args.rounds, "rows": rows, "skipped": skipped}, indent=1)
    )
    out.with_suffix(".tmp").replace(out)


def print_table(rows: list[dict], threads: list[int], skipped: dict[str, str]) -> None:
    head = ["candidate", "MiB", "peak RSS MiB", "ppl Δ% [95% CI]"]
    for t in threads:
        head += [f"decode tok/s ({t}t)", f"× fp32 ({t}t)", f"prefill tok/s ({t}t)", f"× ({t}t)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        p = r["perplexity_change_pct"]
        cells = [
            r["candidate"],
            f"{r['model_mib']:.0f}",
            f"{r['peak_rss_mib'] or float('nan'):.0f}",
            f"{p['point']:+.2f} [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}]",
        ]
        for t in threads:
            d, f = r[f"decode_speedup_t{t}"], r[f"prefill_speedup_t{t}"]
            cells += [
                f"{r[f'decode_tok_s_t{t}']:.1f}",
                f"{d['point']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]",
                f"{r[f'prefill_tok_s_t{t}']:.0f}",
                f"{f['point']:.2f}",
            ]
        print("| " + " | ".join(cells) + " |")
    for name, why in skipped.items():
        print(f"\nskipped {name}: {why}")


if __name__ == "__main__":
    main()
