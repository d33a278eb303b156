"""Coverage of unbottle's 95% intervals at the sample sizes its default commands use (issue 16).

Each estimator is run on many simulated data sets whose true value is known; the share of intervals
that contain it is its coverage at that n. The data imitate what the estimators see:

- speed (paired ratio of medians, ``ab`` and ``optimize``'s rounds): A and B alternate within a round
  and share its drift (log-normal, drift 10%, noise 10%); true ratio 1.2;
- perplexity (pooled relative change, the accuracy guard): per-window NLL differences with a mean of
  0.005 nats/token and window-to-window spread from a Student t with 4 degrees of freedom (heavier
  tails than normal, as real window differences have), 512-token windows;
- the percentile bootstrap that the perplexity interval used before, on the same windows;
- speed between runs (the verification's two time blocks of 5 rounds): quieter rounds (drift 5%,
  noise 3%, as measured A-vs-A on the real model) whose ratio itself moves from block to block
  (log-normal, spread tau, as another tenant or a frequency step moves it); true ratio 1.2 on average.
  The pooled interval against the one widened to each block's own interval (``compare_samples``
  with ``blocks``, what verification reports).

Prints one JSON line per (estimator, n) and a markdown table.

    .venv/bin/python benchmarks/coverage.py --simulations 2000
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from unbottle.comparison.speed import compare_samples
from unbottle.stats.paired import ratio_of_medians_paired, relative_change_pooled


def speed_rounds(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    shared = rng.normal(0.0, 0.1, n)
    return np.exp(shared + rng.normal(0.0, 0.1, n)), 1.2 * np.exp(shared + rng.normal(0.0, 0.1, n))


def windows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = rng.normal(3.5, 0.4, n)
    b = a + 0.005 + 0.01 * rng.standard_t(4, n)
    return a, b, np.full(n, 511.0)


def percentile_bootstrap(a, b, w, seed):
    def pooled(idx):
        d = (b - a)[idx]
        ww = w[idx]
        return 100 * math.expm1(float(np.sum(ww * d) / np.sum(ww)))

    rng = np.random.default_rng(seed)
    reps = [pooled(rng.integers(0, a.size, a.size)) for _ in range(1000)]
    return np.percentile(reps, [2.5, 97.5])


def blocked_coverage(tau: float, sims: int) -> tuple[float, float]:
    """(pooled, widened) coverage of the long-run ratio 1.2 by 2 blocks x 5 rounds, block spread tau."""
    rng = np.random.default_rng(int(tau * 1000) + 7)
    hits = [0, 0]
    for _ in range(sims):
        a, b = [], []
        for _block in range(2):
            ratio = 1.2 * math.exp(rng.normal(0.0, tau))
            shared = rng.normal(0.0, 0.05, 5)
            a += list(np.exp(shared + rng.normal(0.0, 0.03, 5)))
            b += list(ratio * np.exp(shared + rng.normal(0.0, 0.03, 5)))
        for i, blocks in enumerate((None, [5, 5])):
            pct = compare_samples("decode.tokens_per_s", "tokens/s", True, a, b, True, blocks=blocks).pct
            hits[i] += pct.contains(20.0)
    return hits[0] / sims, hits[1] / sims


def coverage(kind: str, n: int, sims: int) -> float:
    rng = np.random.default_rng(n)
    hits = 0
    for i in range(sims):
        if kind == "speed: paired ratio of medians":
            a, b = speed_rounds(rng, n)
            hits += ratio_of_medians_paired(a, b, n_resamples=1000, seed=i).contains(1.2)
        elif kind == "perplexity: weighted paired t":
            hits += relative_change_pooled(*windows(rng, n)).contains(100 * math.expm1(0.005))
        else:
            low, high = percentile_bootstrap(*windows(rng, n), seed=i)
            hits += low <= 100 * math.expm1(0.005) <= high
    return hits / sims


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--simulations", type=int, default=2000)
    args = ap.parse_args()
    cases = (
        [("speed: paired ratio of medians", n) for n in (3, 5, 10)]
        + [("perplexity: weighted paired t", n) for n in (2, 4, 8, 32)]
        + [("perplexity: percentile bootstrap (before)", n) for n in (4, 8, 32)]
    )
    rows = []
    for kind, n in cases:
        c = coverage(kind, n, args.simulations)
        rows.append((kind, n, c))
        print(json.dumps({"estimator": kind, "n": n, "coverage": c, "simulations": args.simulations}))
    print("\n| estimator | n | coverage of the 95% interval |\n|---|---|---|")
    for kind, n, c in rows:
        print(f"| {kind} | {n} | {c:.1%} |")
    print("\n| block-to-block spread of the ratio | pooled interval | widened to each block's (reported) |")
    print("|---|---|---|")
    for tau in (0.0, 0.03, 0.06, 0.1):
        pooled, widened = blocked_coverage(tau, args.simulations)
        print(
            json.dumps(
                {"estimator": "speed, 2 blocks x 5 rounds", "tau": tau, "pooled": pooled, "widened": widened}
            )
        )
        print(f"| {tau:.0%} | {pooled:.1%} | {widened:.1%} |")


if __name__ == "__main__":
    main()
