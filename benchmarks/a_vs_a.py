"""Empirical coverage of `unbottle ab`'s speed intervals: the same model against itself, many times.

Each repeat is a fresh `unbottle ab MODEL MODEL` process (its own load, warm-up and interleaved rounds),
so the repeats see what separate runs see: another process's load, frequency and cache state moving
between runs. Both sides are the same model, so the true ratio is 1 and every 95% interval should hold
it about 19 times in 20 (issue 16: at least 18 of 20). Exit code 1 when fewer do, for any metric.

Usage: python benchmarks/a_vs_a.py [--model smollm2-135m] [--repeats 20] [--threads 1] [--rounds 10]
Writes benchmarks/results/a_vs_a.json (every repeat's ratios and intervals, the host) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unbottle.core.env import manifest

NEEDED = 18 / 20


def one_repeat(model: str, threads: int, rounds: int, home: str) -> dict:
    """One fresh `unbottle ab` process; its comparison's ratio and interval per metric."""
    cmd = [sys.executable, "-m", "unbottle.cli", "ab", model, model, "--threads", str(threads)]
    cmd += ["--rounds", str(rounds), "--json", "--quiet"]
    env = {**os.environ, "UNBOTTLE_HOME": home}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"unbottle ab failed ({done.returncode}):\n{done.stderr[-2000:]}")
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: m["ratio"] for name, m in doc["comparison"]["metrics"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "a_vs_a.json"))
    args = parser.parse_args()
    repeats = []
    with tempfile.TemporaryDirectory(prefix="unbottle-avsa-") as home:
        for i in range(args.repeats):
            start = time.perf_counter()
            repeats.append(one_repeat(args.model, args.threads, args.rounds, home))
            tps = repeats[-1]["decode.tokens_per_s"]
            print(
                f"repeat {i + 1}/{args.repeats}: tokens/s ratio {tps['point']:.3f} "
                f"[{tps['ci_low']:.3f}, {tps['ci_high']:.3f}] ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    summary = {}
    for name in repeats[0]:
        held = sum(r[name]["ci_low"] <= 1.0 <= r[name]["ci_high"] for r in repeats)
        widths = sorted(r[name]["ci_high"] - r[name]["ci_low"] for r in repeats)
        summary[name] = {"held": held, "of": len(repeats), "median_width": widths[len(widths) // 2]}
    out = {"args": vars(args), "summary": summary, "repeats": repeats, "manifest": manifest()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print("| metric | intervals holding 1 | median width |\n|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['held']} of {s['of']} | {s['median_width']:.3f} |")
    missed = [n for n, s in summary.items() if s["held"] < NEEDED * s["of"]]
    if missed:
        print(f"MISSED: fewer than {NEEDED:.0%} of intervals hold 1 for {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
