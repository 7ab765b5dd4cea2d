"""Stop-reason mix: fixed-horizon tests, anytime-valid e-values and per-reason risk ratios, from counts.

Everything here takes per-track count vectors indexed like ``STOP_REASON_CATEGORIES`` (``completed``
first), so the analyzer can feed ClickHouse ``GROUP BY track, stop_reason`` aggregates directly.

Fixed horizon: a G-test (likelihood-ratio chi-square) of the 2 x k table, after pooling the
reasons whose expected count is below the guard into one cell; per reason a one-sided Fisher exact
test (canary more often), Holm-corrected across the reasons; risk ratios with Katz's log interval
and share differences with the Agresti-Caffo interval.

Anytime-valid (Lindon & Malek, "Anytime-valid inference for multinomial count data", NeurIPS 2022,
two-arm case): condition on each run's stop reason. Under "no change" every run, whatever its
reason, is a canary run with probability ``canary_share`` (p0), independently, so within each reason
the canary indicator is a Bernoulli(p0) sequence. Against the alternative that the canary's
probability within reason k is theta_k, a conjugate Beta prior on theta_k gives the mixture
likelihood ratio in closed form (a Beta-binomial Bayes factor), a test martingale in the number of
runs. We truncate the prior to the harmful side (theta > p0 for a bad reason, theta < p0 for
``completed``), which keeps a supermartingale under the whole composite null "the canary is not
worse on any reason", and multiply the reasons' factors: each run updates exactly one factor,
chosen by its reason before its track is seen, so the product is again a test supermartingale
(Ville: P(ever >= 1/alpha) <= alpha). The prior's spread is set so that its standard deviation is
the canary probability a reason at the practical floor (risk ratio 1.5) would show: the test is
tuned to the smallest effect worth detecting. The e-value depends on the counts only, so it is the
same however the runs were batched. It is valid only if the canary's traffic share really is p0:
``traffic_share_log_evalue`` watches that (a sample-ratio mismatch test in the same family).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from agentwatch.collectors.drift.config import STOP_REASON_CATEGORIES

CountArray = npt.NDArray[np.int64]
LOG_E_CAP = 700.0
"""Largest natural log of an e-value we report (e^700 ~ 1e304 still fits a float and JSON)."""


# --- fixed horizon -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MixTest:
    """A G-test of the 2 x k table; ``cells`` names what was tested (pooled reasons joined by ``+``)."""

    statistic: float
    dof: int
    p_value: float
    cells: tuple[str, ...]


def pooled_cells(baseline: CountArray, canary: CountArray, min_expected: float) -> list[list[int]]:
    """Groups of reason indices such that every group's expected count in both tracks reaches ``min_expected``.

    Reasons below the guard are pooled together, and the pool joins the smallest remaining bad
    reason until it is large enough; ``completed`` is never pooled away from its own cell.
    """
    totals = baseline + canary
    n_total = int(totals.sum())
    if n_total == 0:
        return []
    smaller_track = min(int(baseline.sum()), int(canary.sum()))
    expected = totals * smaller_track / n_total  # the smaller track's expected count bounds the table's
    big = [[k] for k in range(len(totals)) if totals[k] > 0 and expected[k] >= min_expected]
    small = [k for k in range(len(totals)) if totals[k] > 0 and expected[k] < min_expected]
    if not small:
        return big
    pool = small
    while expected[pool].sum() < min_expected:
        candidates = [cell for cell in big if cell != [0]]
        if not candidates:
            break
        smallest = min(candidates, key=lambda cell: float(expected[cell].sum()))
        big.remove(smallest)
        pool = sorted(pool + smallest)
    if expected[pool].sum() >= min_expected or not big:
        big.append(pool)
    else:  # nothing left to pool with but `completed`: the pool joins it rather than vanish
        big = [sorted(cell + pool) if cell == [0] else cell for cell in big]
    return sorted(big)


def g_test(baseline: CountArray, canary: CountArray, min_expected: float) -> MixTest | None:
    """The G-test of homogeneity after pooling, or None when fewer than two cells remain."""
    from scipy.stats import chi2_contingency  # type: ignore[import-untyped]

    cells = pooled_cells(baseline, canary, min_expected)
    if len(cells) < 2:
        return None
    table = np.array([[baseline[cell].sum() for cell in cells], [canary[cell].sum() for cell in cells]])
    statistic, p_value, dof, _ = chi2_contingency(table, correction=False, lambda_="log-likelihood")
    names = tuple("+".join(STOP_REASON_CATEGORIES[k] for k in cell) for cell in cells)
    return MixTest(float(statistic), int(dof), float(p_value), names)


def fisher_greater(baseline_k: int, baseline_n: int, canary_k: int, canary_n: int) -> float:
    """One-sided Fisher exact p-value that the reason is more frequent among canary runs."""
    from scipy.stats import fisher_exact

    table = [[canary_k, canary_n - canary_k], [baseline_k, baseline_n - baseline_k]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control), in the input's order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def risk_ratio(
    baseline_k: int, baseline_n: int, canary_k: int, canary_n: int, confidence: float
) -> tuple[float, tuple[float, float]]:
    """Canary share over baseline share of a reason, with Katz's log interval (0.5 added to zero cells)."""
    from scipy.stats import norm

    a, b = float(canary_k), float(baseline_k)
    if a == 0 or b == 0:
        a, b = a + 0.5, b + 0.5
        canary_total, baseline_total = canary_n + 0.5, baseline_n + 0.5
    else:
        canary_total, baseline_total = float(canary_n), float(baseline_n)
    ratio = (a / canary_total) / (b / baseline_total)
    spread = math.sqrt(max(1 / a - 1 / canary_total + 1 / b - 1 / baseline_total, 0.0))
    z = float(norm.ppf(0.5 + confidence / 2))
    return ratio, (ratio * math.exp(-z * spread), ratio * math.exp(z * spread))


def share_difference(
    baseline_k: int, baseline_n: int, canary_k: int, canary_n: int, confidence: float
) -> tuple[float, tuple[float, float]]:
    """Canary share minus baseline share, with the Agresti-Caffo interval (sound with zero counts)."""
    from scipy.stats import norm

    difference = canary_k / canary_n - baseline_k / baseline_n
    p_c, p_b = (canary_k + 1) / (canary_n + 2), (baseline_k + 1) / (baseline_n + 2)
    spread = math.sqrt(p_c * (1 - p_c) / (canary_n + 2) + p_b * (1 - p_b) / (baseline_n + 2))
    z = float(norm.ppf(0.5 + confidence / 2))
    centre = p_c - p_b
    return difference, (max(-1.0, centre - z * spread), min(1.0, centre + z * spread))


# --- anytime-valid -------------------------------------------------------------------------------

Side = Literal["greater", "less", "both"]


def check_share(canary_share: float) -> float:
    """``canary_share`` when it is a probability strictly between 0 and 1, else a ValueError."""
    if not (isinstance(canary_share, float | int) and math.isfinite(canary_share) and 0.0 < canary_share < 1.0):
        raise ValueError(
            f"canary_share must be the canary's traffic share, strictly between 0 and 1; got {canary_share!r}"
        )
    return float(canary_share)


def prior_concentration(canary_share: float, ratio: float = 1.5) -> float:
    """Beta prior concentration whose spread equals the canary probability shift of a reason at ``ratio``.

    Within one reason, a risk ratio r moves the canary probability from p0 to p0 r / (p0 r + 1 - p0);
    a Beta(kappa p0, kappa (1 - p0)) prior has standard deviation sqrt(p0 (1 - p0) / (kappa + 1)).
    """
    p0 = check_share(canary_share)
    shifted = p0 * ratio / (p0 * ratio + 1 - p0)
    spread = max(shifted - p0, 1e-3)
    return max(p0 * (1 - p0) / spread**2 - 1, 2.0)


def _log_beta(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    from scipy.special import betaln  # type: ignore[import-untyped]

    return np.asarray(betaln(a, b), dtype=np.float64)


def _log_tail(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], p0: float, side: Side) -> npt.NDArray[np.float64]:
    """log P(theta beyond p0 on ``side``) for theta ~ Beta(a, b); 0 for a two-sided prior."""
    from scipy.special import betainc, betaincc

    if side == "both":
        return np.zeros_like(a)
    tail = betaincc(a, b, p0) if side == "greater" else betainc(a, b, p0)
    return np.log(np.maximum(np.asarray(tail, dtype=np.float64), np.finfo(np.float64).tiny))


def bernoulli_log_evalue(
    canary: npt.ArrayLike, total: npt.ArrayLike, canary_share: float, concentration: float, side: Side = "both"
) -> npt.NDArray[np.float64]:
    """log of the Beta-mixture e-value that ``canary`` of ``total`` runs is not Binomial(total, p0) (element-wise).

    log BF = log B(a + c, b + n - c) - log B(a, b) - c log p0 - (n - c) log(1 - p0), with
    a = kappa p0, b = kappa (1 - p0); a one-sided ``side`` restricts the prior to theta > p0
    ("greater") or theta < p0 ("less") and renormalises it.
    """
    p0 = check_share(canary_share)
    c = np.asarray(canary, dtype=np.float64)
    n = np.asarray(total, dtype=np.float64)
    if np.any(c < 0) or np.any(c > n):
        raise ValueError("canary counts must be between 0 and the total count")
    a, b = concentration * p0, concentration * (1 - p0)
    post_a, post_b = a + c, b + n - c
    log_bf = _log_beta(post_a, post_b) - _log_beta(a, b) - c * math.log(p0) - (n - c) * math.log1p(-p0)
    prior_a, prior_b = np.full_like(c, a), np.full_like(c, b)
    log_bf = log_bf + _log_tail(post_a, post_b, p0, side) - _log_tail(prior_a, prior_b, p0, side)
    return np.minimum(log_bf, LOG_E_CAP)


def reason_log_evalues(
    baseline: npt.ArrayLike, canary: npt.ArrayLike, canary_share: float, *, ratio: float = 1.5
) -> npt.NDArray[np.float64]:
    """Per reason, log e-value that the canary is worse on it (bad reasons: more often; ``completed``: less).

    Counts are indexed like ``STOP_REASON_CATEGORIES`` along the last axis; leading axes (e.g. one
    row per look) are computed element-wise.
    """
    b, c = _check_counts(baseline, canary)
    kappa = prior_concentration(canary_share, ratio)
    total = b + c
    result = np.empty(c.shape, dtype=np.float64)
    result[..., :1] = bernoulli_log_evalue(c[..., :1], total[..., :1], canary_share, kappa, "less")
    result[..., 1:] = bernoulli_log_evalue(c[..., 1:], total[..., 1:], canary_share, kappa, "greater")
    return result


def stop_reason_log_evalue(
    baseline: CountArray, canary: CountArray, canary_share: float, *, ratio: float = 1.5
) -> float:
    """log e-value of the stop-reason mix against "the canary is not worse on any reason" (a product over reasons)."""
    if np.ndim(baseline) != 1:
        raise ValueError("stop_reason_log_evalue takes one count vector per track; use reason_log_evalues for more")
    return float(min(reason_log_evalues(baseline, canary, canary_share, ratio=ratio).sum(), LOG_E_CAP))


def traffic_share_log_evalue(baseline_runs: int, canary_runs: int, canary_share: float) -> float:
    """log e-value that the canary's share of runs is not ``canary_share`` (sample-ratio mismatch, two-sided)."""
    kappa = prior_concentration(canary_share, 1.5)
    return float(bernoulli_log_evalue(canary_runs, baseline_runs + canary_runs, canary_share, kappa, "both"))


def _check_counts(baseline: npt.ArrayLike, canary: npt.ArrayLike) -> tuple[CountArray, CountArray]:
    b, c = np.asarray(baseline), np.asarray(canary)
    size = len(STOP_REASON_CATEGORIES)
    if b.shape != c.shape or b.ndim == 0 or b.shape[-1] != size:
        raise ValueError(f"count vectors must have {size} entries, one per STOP_REASON_CATEGORIES")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))) or np.any(b < 0) or np.any(c < 0):
        raise ValueError("counts must be non-negative numbers")
    return b.astype(np.int64), c.astype(np.int64)


def counts_of(reasons: npt.NDArray[np.int64]) -> CountArray:
    """Per-category counts of reason indices."""
    return np.bincount(reasons, minlength=len(STOP_REASON_CATEGORIES)).astype(np.int64)
