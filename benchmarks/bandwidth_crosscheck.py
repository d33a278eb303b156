"""Does ``unbottle profile``'s memory bandwidth agree with a plain numpy measurement?

Both read the same amount of float32 data (256 MiB), best of 7 calls, in interleaved rounds at 1 torch
thread: unbottle's measurement (the faster of a torch sum and max) against numpy's sum (single-threaded;
the ratio is against it) and numpy's max (reported beside); the 2-thread torch value too.
Prints one JSON line with medians and the ratio.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from unbottle.profiling.peaks import BANDWIDTH_BYTES, measure_bandwidth


def numpy_bandwidth(kernel: str = "sum", nbytes: int = BANDWIDTH_BYTES, repeats: int = 7) -> float:
    x = np.ones(nbytes // 4, dtype=np.float32)
    fn = x.sum if kernel == "sum" else x.max
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return x.nbytes / best / 1e9


def main(rounds: int = 9) -> None:
    torch_1t, numpy_1t, numpy_max, torch_2t = [], [], [], []
    for r in range(rounds):
        order = ("torch", "numpy") if r % 2 == 0 else ("numpy", "torch")
        for side in order:
            if side == "torch":
                torch.set_num_threads(1)
                torch_1t.append(measure_bandwidth())
            else:
                numpy_1t.append(numpy_bandwidth("sum"))
                numpy_max.append(numpy_bandwidth("max"))
        torch.set_num_threads(2)
        torch_2t.append(measure_bandwidth())
    ratios = [t / n for t, n in zip(torch_1t, numpy_1t, strict=True)]
    print(
        json.dumps(
            {
                "rounds": rounds,
                "torch_1t_gbps": statistics.median(torch_1t),
                "numpy_sum_gbps": statistics.median(numpy_1t),
                "numpy_max_gbps": statistics.median(numpy_max),
                "ratio_median": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
                "torch_2t_gbps": statistics.median(torch_2t),
            }
        )
    )


if __name__ == "__main__":
    main()
