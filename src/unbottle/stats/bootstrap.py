"""Percentile-bootstrap confidence intervals, fast enough to attach to every measurement.

Benchmark samples (latencies above all) are skewed and few, so a normal-theory interval on the mean
misleads; the bootstrap makes no shape assumption. The default statistic, the median, takes an exact
shortcut: the median of a resample depends only on two order statistics of the resampled indices,
which are drawn directly from Beta distributions, so the cost is O(n_resamples) instead of
O(n_resamples * n). Any other statistic is resampled in chunks that bound memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from unbottle.core.errors import ConfigError

Statistic = Callable[..., np.ndarray]

# Elements of one chunk of the resample matrix (float64 values + int32 indices: ~12 MiB).
_CHUNK_ELEMENTS = 1 << 20


def as_samples(samples: Sequence[float] | np.ndarray) -> np.ndarray:
    """Validate raw samples and return them as a 1-D float64 array.

    Args:
        samples: raw measurements, one number each.

    Returns:
        The samples as a new 1-D ``float64`` array.

    Raises:
        ConfigError: if ``samples`` is empty, not one-dimensional, or holds NaN or infinity.
    """
    values = np.asarray(samples, dtype=np.float64)
    if values.ndim != 1:
        raise ConfigError(f"samples must be a flat sequence of numbers; got an array of shape {values.shape}")
    if values.size == 0:
        raise ConfigError("samples is empty; a statistic needs at least one measured value")
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise ConfigError(f"samples holds {bad} NaN or infinite value(s); drop failed measurements first")
    return values


def bootstrap_ci(
    samples: Sequence[float] | np.ndarray,
    statistic: Statistic = np.median,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic``.

    Args:
        samples: raw measurements.
        statistic: reduction called as ``statistic(matrix, axis=1)`` on a (resamples, n) matrix;
            numpy reductions (``np.median``, ``np.mean``, ...) qualify. Functions without an ``axis``
            argument are applied row by row, which is slower.
        confidence: two-sided coverage, strictly between 0 and 1.
        n_resamples: number of bootstrap resamples.
        seed: seed of the random generator; equal inputs and seed give equal intervals.

    Returns:
        ``(low, high)``; ``(x, x)`` for a single sample ``x``.

    Raises:
        ConfigError: on empty or non-finite samples, ``confidence`` outside (0, 1), or
            ``n_resamples`` < 1.

    Example:
        >>> low, high = bootstrap_ci([10.2, 10.4, 9.9, 10.1, 12.0], confidence=0.9)
    """
    values = as_samples(samples)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95); got {confidence!r}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer (e.g. 2000); got {n_resamples!r}")
    if values.size == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    if statistic is np.median:
        replicates = _median_replicates(np.sort(values), n_resamples, rng)
    else:
        replicates = _resampled_statistics(values, statistic, n_resamples, rng)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _median_replicates(sorted_values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    # With U_i ~ U(0, 1), floor(n * U_i) is a uniform resample index and floor is monotone, so the k-th
    # smallest resampled index is floor(n * U_(k)) with U_(k) ~ Beta(k, n + 1 - k). Given U_(k) = u, the
    # next order statistic is u + (1 - u) * Beta(1, n - k): the minimum of n - k uniforms on (u, 1).
    n = sorted_values.size
    k = (n + 1) // 2  # 1-based rank of the (lower) middle order statistic
    u_low = rng.beta(k, n + 1 - k, size=n_resamples)
    low = sorted_values[_to_index(u_low, n)]
    if n % 2:
        return low
    u_high = u_low + (1.0 - u_low) * rng.beta(1, n - k, size=n_resamples)
    return 0.5 * (low + sorted_values[_to_index(u_high, n)])


def _to_index(u: np.ndarray, n: int) -> np.ndarray:
    return np.minimum((u * n).astype(np.int64), n - 1)


def _resampled_statistics(
    values: np.ndarray, statistic: Statistic, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    n = values.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    index_dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        resampled = values[rng.integers(0, n, size=(stop - start, n), dtype=index_dtype)]  # (rows, n)
        out[start:stop] = _apply_rowwise(statistic, resampled)
    return out


def _apply_rowwise(statistic: Statistic, matrix: np.ndarray) -> np.ndarray:
    try:
        result = np.asarray(statistic(matrix, axis=1), dtype=np.float64)
    except TypeError:  # no ``axis`` keyword: fall back to one call per resample
        return np.apply_along_axis(statistic, 1, matrix).astype(np.float64)
    if result.shape != (matrix.shape[0],):
        raise ConfigError(
            f"statistic {getattr(statistic, '__name__', statistic)!r} must reduce each resample to one "
            f"number; it returned shape {result.shape} for {matrix.shape[0]} resamples"
        )
    return result
