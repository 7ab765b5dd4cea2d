"""Anytime-valid tests for cost, steps, tool calls and duration: betting on the canary coin.

Under "no change" (the canary routed a fixed share p0 of runs at random, and its runs look like
the baseline's), whether a run is a canary run is a Bernoulli(p0) coin independent of the run's
value and of everything before it. So for any score g_i in [-1, 1] computed from the run's value
and *earlier* runs only, E[(C_i - p0) g_i | past, value_i] = 0, and

    M_t = prod_{i <= t} (1 + lambda (C_i - p0) g_i),   0 <= lambda <= 1 / max(p0, 1 - p0),

is a nonnegative test martingale: by Ville's inequality P(sup_t M_t >= 1/alpha) <= alpha, at every
look, however often one looks. A canary whose values are larger makes (C_i - p0) and g_i agree,
and M grows. We average M over a grid of ten bets (1/2, 1/4, ... 1/1024 of the largest safe one),
itself a test martingale, which costs at most log(10) against the best fixed bet in hindsight.

The score compares the run with a reference sample of *baseline* values seen before it: the first
2^k baseline runs, for the largest 2^k (between 64 and 65,536) not exceeding the number of baseline
runs before this run. Doubling keeps the reference a deterministic function of counts, so every
run's score is the same however the records were batched; runs before 64 baseline runs score 0.

- ``rank`` (``cost_usd``, ``steps``, ``tool_calls``, ``duration_s``): g = 2u - 1 with u the run's
  mid-rank among the reference: a sequential, one-sided Mann-Whitney in betting form.
- ``mean`` (``cost_usd_mean``): g = h(x) - mean of h over the reference, h(x) = min(x / (5 m), 1)
  with m the reference mean: sensitive to the mean (budgets add up) yet bounded, which betting needs;
  values beyond five times the baseline mean count as five times the mean.

Log-factors are accumulated in fixed point (units of 2^-40), so sums are exact integers and the
e-value is the same bit for bit whether the history came in one call or a thousand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
ScoreKind = Literal["rank", "mean"]

BET_FRACTIONS: Final = tuple(2.0**-j for j in range(1, 11))
FIXED_POINT: Final = float(2**40)
MIN_REFERENCE: Final = 64
MAX_REFERENCE: Final = 2**16
MEAN_CAP: Final = 5.0


def reference_sizes(baseline_before: IntArray) -> IntArray:
    """Reference size for runs preceded by ``baseline_before`` baseline runs (0: not enough yet)."""
    clipped = np.minimum(np.maximum(baseline_before, 1), MAX_REFERENCE)
    sizes = (2 ** np.floor(np.log2(clipped))).astype(np.int64)
    return np.where(baseline_before >= MIN_REFERENCE, sizes, 0)


class ReferenceCache:
    """Sorted reference samples by size (a monitor keeps one per metric; sizes only double)."""

    def __init__(self) -> None:
        self._sorted: dict[int, FloatArray] = {}

    def sorted_prefix(self, history: FloatArray, size: int) -> FloatArray:
        reference = self._sorted.get(size)
        if reference is None:
            if len(history) < size:
                raise ValueError(f"reference of {size} runs needs {size} baseline values, have {len(history)}")
            reference = np.sort(history[:size])
            self._sorted = {size: reference}  # sizes only grow: drop the smaller one
        return reference


def scores(
    values: FloatArray,
    canary: BoolArray,
    *,
    history: FloatArray,
    baseline_seen: int,
    kind: ScoreKind,
    cache: ReferenceCache | None = None,
) -> FloatArray:
    """Score in [-1, 1] of each run against the baseline runs before it.

    ``history`` holds the first baseline values in arrival order (at least ``MAX_REFERENCE`` of them
    once that many exist) *before* this chunk; ``baseline_seen`` counts every baseline run before it.
    """
    cache = cache if cache is not None else ReferenceCache()
    is_baseline = ~canary
    before = baseline_seen + np.cumsum(is_baseline) - is_baseline
    sizes = reference_sizes(before.astype(np.int64))
    known = np.concatenate([history[:MAX_REFERENCE], values[is_baseline]])[:MAX_REFERENCE]
    result = np.zeros(len(values), dtype=np.float64)
    for size in np.unique(sizes):
        if size == 0:
            continue
        rows = sizes == size
        reference = cache.sorted_prefix(known, int(size))
        chunk = values[rows]
        if kind == "rank":
            below = np.searchsorted(reference, chunk, side="left")
            at_most = np.searchsorted(reference, chunk, side="right")
            result[rows] = (below + at_most) / size - 1.0  # 2 u - 1 with u the mid-rank
        else:
            scale = MEAN_CAP * float(reference.mean())
            if scale <= 0:
                continue  # an all-zero reference says nothing about the mean yet
            centre = float(np.minimum(reference / scale, 1.0).mean())
            result[rows] = np.minimum(chunk / scale, 1.0) - centre
    return result


def bet_sizes(canary_share: float) -> FloatArray:
    """The grid of bets: fractions of the largest bet that keeps every factor positive."""
    largest = 1.0 / max(canary_share, 1.0 - canary_share)
    return np.array(BET_FRACTIONS, dtype=np.float64) * largest


def fixed_point_log_factors(canary: BoolArray, run_scores: FloatArray, canary_share: float) -> IntArray:
    """Per run and bet, log(1 + lambda (C - p0) g) in fixed point (shape: runs x bets)."""
    payoff = (canary.astype(np.float64) - canary_share) * run_scores
    factors = np.log1p(payoff[:, None] * bet_sizes(canary_share)[None, :])
    return np.rint(factors * FIXED_POINT).astype(np.int64)


def log_evalue(sums: Sequence[int] | IntArray) -> float:
    """log of the average over bets of exp(sum of log-factors), from the fixed-point sums."""
    logs = np.array([int(total) / FIXED_POINT for total in sums], dtype=np.float64)
    peak = float(logs.max())
    return peak + math.log(float(np.exp(logs - peak).mean()))


def log_evalue_path(values: FloatArray, canary: BoolArray, canary_share: float, kind: ScoreKind) -> FloatArray:
    """log e-value after each run of one stream (what the monitor reports after a look at that run)."""
    run_scores = scores(values, canary, history=np.zeros(0), baseline_seen=0, kind=kind)
    cumulative = np.cumsum(fixed_point_log_factors(canary, run_scores, canary_share), axis=0) / FIXED_POINT
    peak = cumulative.max(axis=1)
    return np.asarray(peak + np.log(np.exp(cumulative - peak[:, None]).mean(axis=1)), dtype=np.float64)
