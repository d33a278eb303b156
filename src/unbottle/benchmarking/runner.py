"""The repeat loop: warm up, then measure until both a minimum count and a minimum time are met.

Both minima matter: a count alone under-samples fast operations, a time alone under-samples slow
ones. ``fn`` returns the samples of one repeat (a dict of metric name to list), so one repeat can
yield several metrics (e.g. per-token latencies and the repeat's tokens/s).
"""

from __future__ import annotations

import time
from collections.abc import Callable

Samples = dict[str, list[float]]
ProgressFn = Callable[[str, int, float], None]


def repeat(
    fn: Callable[[], Samples],
    warmup: int,
    min_repeats: int,
    min_time_s: float,
    label: str = "",
    progress: ProgressFn | None = None,
) -> Samples:
    """Run ``fn`` ``warmup`` times unmeasured, then until ``min_repeats`` and ``min_time_s`` are met.

    Returns:
        Every sample of every measured repeat, concatenated per metric, in order.
    """
    for _ in range(warmup):
        fn()
    collected: Samples = {}
    start = time.perf_counter()
    count = 0
    while count < min_repeats or time.perf_counter() - start < min_time_s:
        for name, values in fn().items():
            collected.setdefault(name, []).extend(values)
        count += 1
        if progress is not None:
            progress(label, count, time.perf_counter() - start)
    return collected
