"""Cost, steps, tool calls and duration: is the canary's distribution larger, and by how much?

Fixed horizon: the one-sided Mann-Whitney U test (canary larger), the Hodges-Lehmann shift (the
median of all canary-minus-baseline differences) with Moses's distribution-free interval (normal
approximation with the tie correction), and for cost the ratio of means with a percentile
bootstrap interval and p-value, because budgets add up and a few expensive runs matter even when
the typical run does not move. The ratio also has a delta-method interval, cheap enough to
recompute every minute on large histories (the sequential monitor uses it, and ``compare`` above
``BOOTSTRAP_MAX_RUNS`` runs); the practical floor of every distribution metric is judged on it.

The k-th pairwise difference is found without materialising the n x m differences when they are
many: bisection on the value with a sorted count, then an exact selection among the few
differences left (or, for a block of tied differences, the tied value), so the result is the
brute-force one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
_BRUTE_FORCE_PAIRS = 100_000
BOOTSTRAP_RESAMPLES = 1999
BOOTSTRAP_MAX_RUNS = 200_000
"""Above this many runs ``compare`` uses the delta method for the mean ratio (accurate there, and O(n))."""
BOOTSTRAP_SEED = 20221128
"""Fixed, so that every replica computing the same report gets the same interval."""


def _count_at_most(baseline_sorted: FloatArray, canary: FloatArray, shift: float) -> int:
    """#{(i, j): canary_j - baseline_i <= shift}."""
    below = int(np.searchsorted(baseline_sorted, canary - shift, side="left").sum())  # pairs with a larger difference
    return len(baseline_sorted) * len(canary) - below


def kth_difference(baseline_sorted: FloatArray, canary_sorted: FloatArray, k: int) -> float:
    """The k-th smallest (1-based) of the differences canary_j - baseline_i."""
    n, m = len(baseline_sorted), len(canary_sorted)
    if not 1 <= k <= n * m:
        raise ValueError(f"k must be in [1, {n * m}], got {k}")
    if n * m <= _BRUTE_FORCE_PAIRS:
        differences = (canary_sorted[:, None] - baseline_sorted[None, :]).ravel()
        return float(np.partition(differences, k - 1)[k - 1])
    # Bisection on the value until few differences lie in (low, high], then select among those exactly.
    # Margins keep the end counts exact despite rounding in y - d: count(low) = 0 < k <= count(high) = n m.
    smallest, largest = float(canary_sorted[0] - baseline_sorted[-1]), float(canary_sorted[-1] - baseline_sorted[0])
    low, high = smallest - abs(smallest) - 1.0, largest + abs(largest) + 1.0
    below = 0
    for _ in range(200):
        if _count_at_most(baseline_sorted, canary_sorted, high) - below <= 4 * (n + m):
            break
        middle = low + (high - low) / 2
        if middle in (low, high):
            # (low, high] is as narrow as floats go yet holds many differences: they are ties of one
            # value, so the k-th is the largest actual difference <= high.
            index = np.searchsorted(baseline_sorted, canary_sorted - high, side="left")
            valid = index < n
            return float(np.max(canary_sorted[valid] - baseline_sorted[index[valid]]))
        counted = _count_at_most(baseline_sorted, canary_sorted, middle)
        if counted >= k:
            high = middle
        else:
            low, below = middle, counted
    # The differences in (low, high]: for canary value y, the baseline values in [y - high, y - low).
    start = np.searchsorted(baseline_sorted, canary_sorted - high, side="left")
    stop = np.searchsorted(baseline_sorted, canary_sorted - low, side="left")
    lengths = stop - start
    owner = np.repeat(np.arange(m), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    candidates = canary_sorted[owner] - baseline_sorted[start[owner] + offsets]
    return float(np.partition(candidates, k - below - 1)[k - below - 1])


def hodges_lehmann(baseline: FloatArray, canary: FloatArray) -> float:
    """Median of all canary-minus-baseline differences: the shift a rank test estimates."""
    x, y = np.sort(baseline), np.sort(canary)
    total = len(x) * len(y)
    if total == 0:
        raise ValueError("Hodges-Lehmann needs at least one run on each side")
    if total % 2:
        return kth_difference(x, y, total // 2 + 1)
    return (kth_difference(x, y, total // 2) + kth_difference(x, y, total // 2 + 1)) / 2


def moses_interval(baseline: FloatArray, canary: FloatArray, confidence: float) -> tuple[float, float]:
    """Distribution-free interval for the shift: order statistics of the differences (Moses, normal approximation)."""
    from scipy.stats import norm  # type: ignore[import-untyped]

    x, y = np.sort(baseline), np.sort(canary)
    n, m = len(x), len(y)
    _, ties = np.unique(np.concatenate([x, y]), return_counts=True)
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / ((n + m) * (n + m - 1)) if n + m > 1 else 0.0
    variance = n * m / 12.0 * ((n + m + 1) - tie_term)
    z = float(norm.ppf(0.5 + confidence / 2))
    rank = math.floor(n * m / 2 - z * math.sqrt(max(variance, 0.0)))
    if rank < 1:
        return float(y[0] - x[-1]), float(y[-1] - x[0])
    return kth_difference(x, y, rank), kth_difference(x, y, n * m + 1 - rank)


def mann_whitney_greater(baseline: FloatArray, canary: FloatArray) -> float:
    """One-sided Mann-Whitney p-value that canary values tend to be larger."""
    from scipy.stats import mannwhitneyu

    if np.all(baseline == baseline[0]) and np.all(canary == baseline[0]):
        return 1.0  # every value equal: no evidence either way (scipy would divide by zero)
    return float(mannwhitneyu(canary, baseline, alternative="greater", method="auto").pvalue)


@dataclass(frozen=True, slots=True)
class RatioEstimate:
    """Canary mean over baseline mean, an interval, and (bootstrap only) a one-sided p-value for ratio > 1."""

    ratio: float
    interval: tuple[float, float]
    p_value: float | None


def bootstrap_mean_ratio(
    baseline: FloatArray, canary: FloatArray, confidence: float, *, resamples: int = BOOTSTRAP_RESAMPLES
) -> RatioEstimate | None:
    """Percentile bootstrap of mean(canary) / mean(baseline); None when the baseline mean is 0.

    The p-value is (1 + #{bootstrap ratios <= 1}) / (resamples + 1): how often the resampled
    canary is not more expensive. The generator is seeded, so the result is reproducible.
    """
    from scipy.stats import bootstrap

    if baseline.mean() <= 0:
        return None

    def ratio_of_means(canary_sample: FloatArray, baseline_sample: FloatArray, axis: int = -1) -> FloatArray:
        means = np.mean(baseline_sample, axis=axis)
        return np.asarray(np.mean(canary_sample, axis=axis) / np.where(means > 0, means, np.nan))

    batch = max(1, 4_000_000 // (len(baseline) + len(canary)))
    result = bootstrap(
        (canary, baseline),
        ratio_of_means,
        n_resamples=resamples,
        batch=batch,
        method="percentile",
        confidence_level=confidence,
        rng=np.random.default_rng(BOOTSTRAP_SEED),
        vectorized=True,
    )
    draws = result.bootstrap_distribution
    not_larger = int(np.sum(~(draws > 1.0)))  # NaN (an all-zero baseline resample) counts as not larger
    ratio = float(canary.mean() / baseline.mean())
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return RatioEstimate(ratio, (low, high), (1 + not_larger) / (resamples + 1))


def delta_mean_ratio(baseline: FloatArray, canary: FloatArray, confidence: float) -> RatioEstimate | None:
    """mean(canary) / mean(baseline) with a delta-method interval on the log scale; None when a mean is 0.

    The p-value is one-sided (ratio > 1), from the same normal approximation of the log ratio.
    """
    from scipy.stats import norm

    if len(baseline) < 2 or len(canary) < 2:  # checked first: numpy warns on the mean of an empty side
        return None
    mean_b, mean_c = float(baseline.mean()), float(canary.mean())
    if mean_b <= 0 or mean_c <= 0:
        return None
    spread = math.sqrt(
        float(baseline.var(ddof=1)) / (len(baseline) * mean_b**2)
        + float(canary.var(ddof=1)) / (len(canary) * mean_c**2)
    )
    z = float(norm.ppf(0.5 + confidence / 2))
    ratio = mean_c / mean_b
    p_value = float(norm.sf(math.log(ratio) / spread)) if spread > 0 else float(ratio <= 1.0)
    return RatioEstimate(ratio, (ratio * math.exp(-z * spread), ratio * math.exp(z * spread)), p_value)


def summary(values: FloatArray) -> dict[str, float]:
    """What a report shows of one side: count, mean, median, 90th percentile."""
    if len(values) == 0:
        return {"n": 0.0}
    return {
        "n": float(len(values)),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p90": float(np.quantile(values, 0.9)),
    }
