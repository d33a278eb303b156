"""Bootstrap confidence intervals for comparing B against A, paired where the samples pair up.

Interleaved A/B rounds share the machine's drift (thermal state, frequency, background load), and two
evaluations share their windows or items; resampling the *pairs* keeps that shared part out of the
interval, which is then far narrower than resampling each side on its own. Unpaired resampling is for
two stored runs measured at different times. Every function is vectorised over resamples, chunked so
memory stays bounded, and deterministic given its seed: with equal ``n`` and seed, two paired
statistics are computed on the very same resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import stdtrit

from unbottle.core.errors import ConfigError
from unbottle.stats.bootstrap import _median_replicates, bootstrap_ci
from unbottle.stats.estimate import Estimate

ArrayLike = Sequence[float] | np.ndarray
PairedStatistic = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Resample indices drawn per chunk (int64: 8 MiB, plus one gathered float64 copy per column).
_CHUNK_ELEMENTS = 1 << 20


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    statistic: PairedStatistic,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    *,
    method: str | None = None,
) -> Estimate:
    """Percentile-bootstrap CI of a statistic of paired samples, resampling pairs by index.

    Args:
        a: A's samples, one per round, window or item.
        b: B's samples, ``b[i]`` paired with ``a[i]``.
        statistic: called as ``statistic(a_rows, b_rows)`` with two (R, n) arrays whose rows are
            resamples of the same indices; returns one number per row, shape (R,).
        confidence: two-sided coverage, strictly between 0 and 1.
        n_resamples: bootstrap resamples.
        seed: seed of the random generator.
        method: description stored in the estimate; defaults to the statistic's name.

    Returns:
        An ``Estimate`` whose point is the statistic on the original pairs.

    Raises:
        ConfigError: on unequal lengths, empty or non-finite input, invalid settings, or a statistic
            that does not return one finite number per resample.

    Example:
        >>> def ratio(a, b):
        ...     return b.mean(axis=1) / a.mean(axis=1)
        >>> est = paired_bootstrap([1.0, 1.1, 0.9, 1.2], [1.2, 1.3, 1.1, 1.4], ratio, n_resamples=500)
    """
    a_values, b_values = _paired_columns(a=a, b=b)
    name = method or f"{getattr(statistic, '__name__', 'statistic')}, paired percentile bootstrap"
    return _bootstrap_rows((a_values, b_values), statistic, confidence, n_resamples, seed, name)


def ratio_of_medians_paired(
    a_rounds: ArrayLike,
    b_rounds: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Ratio median(B) / median(A) with a paired bootstrap over rounds.

    Use for interleaved A/B, where round ``i`` of A and of B ran back to back.

    Args:
        a_rounds: A's value per round (seconds, tokens/s, ...), all positive.
        b_rounds: B's value per round, in the same unit and order.
        confidence: two-sided coverage.
        n_resamples: bootstrap resamples.
        seed: seed of the random generator.

    Returns:
        An ``Estimate`` of the ratio (1.0 means no change).

    Raises:
        ConfigError: on unequal lengths or empty, non-finite or non-positive values.
    """
    a, b = _paired_columns(a_rounds=a_rounds, b_rounds=b_rounds)
    _require_positive(a_rounds=a, b_rounds=b)
    method = _method("ratio of medians", "paired", n_resamples, seed)
    return _bootstrap_rows((a, b), _ratio_of_medians, confidence, n_resamples, seed, method)


def median_of_ratios(
    a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Median of the per-pair ratios ``b[i] / a[i]``, with a bootstrap over pairs.

    Resampling pairs is resampling their ratios, so this takes the exact median shortcut of
    ``bootstrap_ci`` (cost independent of ``n``).

    Raises:
        ConfigError: on unequal lengths or empty, non-finite or non-positive values.
    """
    a_values, b_values = _paired_columns(a=a, b=b)
    _require_positive(a=a_values, b=b_values)
    ratios = b_values / a_values
    low, high = bootstrap_ci(ratios, np.median, confidence, n_resamples, seed)
    point = float(np.median(ratios))
    method = _method("median of ratios", "paired", n_resamples, seed)
    return Estimate(point, min(low, point), max(high, point), confidence, ratios.size, method)


def ratio_of_medians_unpaired(
    a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Ratio median(B) / median(A), resampling each side independently (two stored runs).

    ``a`` and ``b`` may differ in length. Both medians take the exact shortcut of ``bootstrap_ci``.

    Raises:
        ConfigError: on empty, non-finite or non-positive values or invalid settings.
    """
    a_values, b_values = _column("a", a), _column("b", b)
    _require_positive(a=a_values, b=b_values)
    a_med, b_med = _unpaired_median_replicates(a_values, b_values, confidence, n_resamples, seed)
    point = float(np.median(b_values) / np.median(a_values))
    method = _method("ratio of medians", "unpaired", n_resamples, seed)
    return _estimate(point, b_med / a_med, confidence, a_values.size + b_values.size, method)


def median_difference_paired(
    a_rounds: ArrayLike,
    b_rounds: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Difference median(B) - median(A) in the samples' unit, with a paired bootstrap over rounds.

    On the same rounds and seed it uses the same resamples as ``ratio_of_medians_paired``.
    """
    a, b = _paired_columns(a_rounds=a_rounds, b_rounds=b_rounds)
    method = _method("difference of medians", "paired", n_resamples, seed)
    return _bootstrap_rows((a, b), _difference_of_medians, confidence, n_resamples, seed, method)


def median_difference_unpaired(
    a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Difference median(B) - median(A), resampling each side independently (two stored runs)."""
    a_values, b_values = _column("a", a), _column("b", b)
    a_med, b_med = _unpaired_median_replicates(a_values, b_values, confidence, n_resamples, seed)
    point = float(np.median(b_values) - np.median(a_values))
    method = _method("difference of medians", "unpaired", n_resamples, seed)
    return _estimate(point, b_med - a_med, confidence, a_values.size + b_values.size, method)


def mean_difference_paired(
    a: ArrayLike,
    b: ArrayLike,
    scale: float = 1.0,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Mean of the paired differences ``(b[i] - a[i]) * scale``, with a bootstrap over pairs.

    With per-item 0/1 correctness and ``scale=100`` this is the accuracy change in points.

    Raises:
        ConfigError: on unequal lengths, empty or non-finite values, or a non-finite ``scale``.
    """
    a_values, b_values = _paired_columns(a=a, b=b)
    if not np.isfinite(scale):
        raise ConfigError(f"scale must be a finite number (e.g. 100 for points); got {scale!r}")

    def scaled_mean_difference(a_rows: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
        return (b_rows - a_rows).mean(axis=1) * scale

    method = _method(f"mean difference x {scale:g}", "paired", n_resamples, seed)
    return _bootstrap_rows(
        (a_values, b_values), scaled_mean_difference, confidence, n_resamples, seed, method
    )


def relative_change_pooled(
    a_scores: ArrayLike,
    b_scores: ArrayLike,
    weights: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Relative perplexity change in percent, pooled over windows, with a weighted paired t-interval.

    Perplexity is ``exp(sum(w * nll) / sum(w))``; on the same windows the ratio B/A is
    ``exp(D)`` with ``D = sum(w * (b - a)) / sum(w)``, so the change is ``100 * (exp(D) - 1)``. The
    interval is ``D ± t(n - 1) * se`` mapped the same way, ``se`` the linearised standard error of the
    weighted mean (with equal weights, exactly the paired t-interval). At the window counts unbottle
    uses by default (8 for a 4096-token verification) it covers as stated, where a percentile
    bootstrap over windows covered about 90% (``benchmarks/coverage.py``).

    Args:
        a_scores: A's mean NLL per window, nats/token.
        b_scores: B's mean NLL per window on the same windows, nats/token.
        weights: scored tokens per window, all positive.
        confidence: two-sided coverage.
        n_resamples, seed: unused (the interval is analytic); kept so every paired estimator is
            called alike.

    Returns:
        An ``Estimate`` of the relative perplexity change in percent (+1.0 means 1% worse).

    Raises:
        ConfigError: on unequal lengths, empty or non-finite values, fewer than 2 windows, or
            non-positive weights.
    """
    a, b, w = _paired_columns(a_scores=a_scores, b_scores=b_scores, weights=weights)
    _require_positive(weights=w)
    _check_settings(confidence, n_resamples)
    n = a.size
    if n < 2:
        raise ConfigError(f"{n} window given; a perplexity change needs at least 2 windows for an interval")
    d = b - a
    pooled = float(np.sum(w * d) / np.sum(w))
    u = w * (d - pooled) / np.mean(w)
    se = float(np.sqrt(np.sum(u**2) / (n * (n - 1))))
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * se
    method = f"pooled relative perplexity change, %, weighted paired t-interval over {n} windows"
    return Estimate(
        point=100.0 * math.expm1(pooled),
        ci_low=100.0 * math.expm1(pooled - half),
        ci_high=100.0 * math.expm1(pooled + half),
        confidence=confidence,
        n=n,
        method=method,
    )


def _ratio_of_medians(a_rows: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
    return np.median(b_rows, axis=1) / np.median(a_rows, axis=1)


def _difference_of_medians(a_rows: np.ndarray, b_rows: np.ndarray) -> np.ndarray:
    return np.median(b_rows, axis=1) - np.median(a_rows, axis=1)


def _bootstrap_rows(
    columns: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    confidence: float,
    n_resamples: int,
    seed: int,
    method: str,
) -> Estimate:
    _check_settings(confidence, n_resamples)
    n = columns[0].size
    point = float(_reduce(statistic, tuple(c[None, :] for c in columns))[0])
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    replicates = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        # int64 draws take one generator word each, so the resamples do not depend on the chunk size.
        index = rng.integers(0, n, size=(stop - start, n), dtype=np.int64)  # (rows, n)
        replicates[start:stop] = _reduce(statistic, tuple(c[index] for c in columns))
    return _estimate(point, replicates, confidence, n, method)


def _reduce(statistic: Callable[..., np.ndarray], rows: tuple[np.ndarray, ...]) -> np.ndarray:
    result = np.asarray(statistic(*rows), dtype=np.float64)
    expected = (rows[0].shape[0],)
    name = getattr(statistic, "__name__", statistic)
    if result.shape != expected:
        raise ConfigError(
            f"statistic {name!r} must return one number per resample row, shape {expected}; "
            f"it returned shape {result.shape}"
        )
    if not np.all(np.isfinite(result)):
        raise ConfigError(
            f"statistic {name!r} returned {int(np.count_nonzero(~np.isfinite(result)))} NaN or infinite "
            "value(s); check for division by zero or log of non-positive values"
        )
    return result


def _estimate(point: float, replicates: np.ndarray, confidence: float, n: int, method: str) -> Estimate:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    # Rounding can leave a degenerate interval a hair off its point; keep the point inside it.
    return Estimate(point, min(float(low), point), max(float(high), point), confidence, n, method)


def _unpaired_median_replicates(
    a: np.ndarray, b: np.ndarray, confidence: float, n_resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    _check_settings(confidence, n_resamples)
    rng = np.random.default_rng(seed)
    return _median_replicates(np.sort(a), n_resamples, rng), _median_replicates(np.sort(b), n_resamples, rng)


def _column(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ConfigError(f"{name} must be a flat sequence of numbers; got an array of shape {array.shape}")
    if array.size == 0:
        raise ConfigError(f"{name} is empty; a comparison needs at least one value on each side")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ConfigError(f"{name} holds {bad} NaN or infinite value(s); drop failed measurements first")
    return array


def _paired_columns(**named: ArrayLike) -> tuple[np.ndarray, ...]:
    columns = {name: _column(name, values) for name, values in named.items()}
    sizes = {name: c.size for name, c in columns.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name} has {size}" for name, size in sizes.items())
        raise ConfigError(
            f"paired samples must have equal lengths, one value per round/window/item; {listed}. "
            "Use the unpaired statistics for runs that do not pair up."
        )
    return tuple(columns.values())


def _require_positive(**named: np.ndarray) -> None:
    for name, values in named.items():
        if np.any(values <= 0):
            raise ConfigError(
                f"{name} holds {int(np.count_nonzero(values <= 0))} zero or negative value(s), smallest "
                f"{values.min():g}; ratios need positive values such as seconds or tokens/s"
            )


def _check_settings(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95); got {confidence!r}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer (e.g. 2000); got {n_resamples!r}")


def _method(statistic: str, scheme: str, n_resamples: int, seed: int) -> str:
    return f"{statistic}, {scheme} percentile bootstrap ({n_resamples} resamples, seed {seed})"
