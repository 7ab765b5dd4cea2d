"""Drift statistics against scipy and hand-computed values, and ``compare``'s verdicts and guards."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from agentwatch.collectors.drift import DriftSettings, RunColumns, RunRecord, compare, distributions, stopreasons
from agentwatch.collectors.drift.columns import REASON_INDEX
from agentwatch.collectors.drift.config import STOP_REASON_CATEGORIES
from agentwatch.collectors.drift.simulation import Profile, simulate


def _counts(**by_reason: int) -> np.ndarray:
    counts = np.zeros(len(STOP_REASON_CATEGORIES), dtype=np.int64)
    for reason, count in by_reason.items():
        counts[REASON_INDEX[reason]] = count
    return counts


def _runs_from_counts(counts: np.ndarray, *, canary: bool, cost: float = 1.0) -> RunColumns:
    reasons = np.repeat(np.arange(len(counts)), counts)
    ones = np.full(len(reasons), cost)
    return RunColumns(np.full(len(reasons), canary), reasons.astype(np.int64), ones, ones, ones, ones)


# --- stop reasons ---------------------------------------------------------------------------------


def test_g_test_matches_the_log_likelihood_ratio_statistic() -> None:
    baseline = _counts(completed=850, max_steps=80, error=40, max_usd=30)
    canary = _counts(completed=160, max_steps=24, error=10, max_usd=6)
    result = stopreasons.g_test(baseline, canary, 5.0)
    assert result is not None
    observed = np.array([[850, 80, 40, 30], [160, 24, 10, 6]], dtype=float)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
    g = 2 * float(np.sum(observed * np.log(observed / expected)))
    assert result.statistic == pytest.approx(g, rel=1e-12)
    assert result.dof == 3
    assert result.p_value == pytest.approx(float(stats.chi2.sf(g, 3)), rel=1e-9)
    by_scipy = stats.power_divergence(
        observed, expected, lambda_="log-likelihood", axis=None, ddof=observed.size - 1 - 3
    )
    assert result.p_value == pytest.approx(float(by_scipy.pvalue), rel=1e-9)


def test_reasons_below_five_expected_are_pooled() -> None:
    baseline = _counts(completed=900, max_steps=80, kill_switch=3, guardrail=4, cancelled=2, error=11)
    canary = _counts(completed=90, max_steps=8, kill_switch=1, error=1)
    cells = stopreasons.pooled_cells(baseline, canary, 5.0)
    totals = baseline + canary
    expected = totals * canary.sum() / totals.sum()
    assert all(expected[cell].sum() >= 5.0 for cell in cells)
    assert sorted(index for cell in cells for index in cell) == [k for k in range(len(totals)) if totals[k]]
    assert [REASON_INDEX["completed"]] in cells  # completed keeps its own cell
    result = stopreasons.g_test(baseline, canary, 5.0)
    assert result is not None
    assert result.dof == len(cells) - 1


def test_beta_binomial_bayes_factor_by_hand() -> None:
    # Uniform prior (p0 = 1/2, concentration 2), three canary runs out of three:
    # two-sided: int theta^3 = 1/4 against (1/2)^3 -> 2; prior on (1/2, 1): (15/64) / (1/2) / (1/8) = 15/4.
    assert float(stopreasons.bernoulli_log_evalue(3, 3, 0.5, 2.0, "both")) == pytest.approx(math.log(2.0))
    assert float(stopreasons.bernoulli_log_evalue(3, 3, 0.5, 2.0, "greater")) == pytest.approx(math.log(15 / 4))
    # One canary run of three against "less": int_0^1/2 theta (1 - theta)^2 = 11/192, / (1/2) / (1/8) = 11/12.
    assert float(stopreasons.bernoulli_log_evalue(1, 3, 0.5, 2.0, "less")) == pytest.approx(math.log(11 / 12))


def test_mix_evalue_is_the_product_of_one_sided_reason_evalues() -> None:
    baseline = _counts(completed=900, max_steps=70, error=30)
    canary = _counts(completed=85, max_steps=12, error=3)
    kappa = stopreasons.prior_concentration(0.1, 1.5)
    completed = stopreasons.bernoulli_log_evalue(85, 985, 0.1, kappa, "less")
    max_steps = stopreasons.bernoulli_log_evalue(12, 82, 0.1, kappa, "greater")
    error = stopreasons.bernoulli_log_evalue(3, 33, 0.1, kappa, "greater")
    total = float(completed + max_steps + error)
    assert stopreasons.stop_reason_log_evalue(baseline, canary, 0.1) == pytest.approx(total, rel=1e-12)
    a, b = kappa * 0.1, kappa * 0.9  # the closed form, once more from scipy's Beta distribution
    direct = (
        math.log(stats.beta.sf(0.1, a + 12, b + 70) / stats.beta.sf(0.1, a, b))
        + float(stats.betabinom.logpmf(12, 82, a, b))
        - float(stats.binom.logpmf(12, 82, 0.1))
    )
    assert float(max_steps) == pytest.approx(direct, rel=1e-9)


def test_holm_and_risk_ratio_by_hand() -> None:
    assert stopreasons.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    ratio, (low, high) = stopreasons.risk_ratio(80, 1000, 13, 100, 0.95)
    assert ratio == pytest.approx(0.13 / 0.08)
    spread = math.sqrt(1 / 13 - 1 / 100 + 1 / 80 - 1 / 1000)
    assert (low, high) == pytest.approx((ratio * math.exp(-1.959964 * spread), ratio * math.exp(1.959964 * spread)))
    difference, (d_low, d_high) = stopreasons.share_difference(0, 1000, 0, 100, 0.95)
    assert difference == 0.0
    assert d_low < 0 < d_high < 0.05


# --- distributions --------------------------------------------------------------------------------


def test_hodges_lehmann_textbook_sample() -> None:
    # Differences of y = (2, 4, 6, 8) and x = (1, 2, 3): -1 0 1 1 2 3 3 4 5 5 6 7, median 3.
    assert distributions.hodges_lehmann(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0, 8.0])) == 3.0
    assert distributions.hodges_lehmann(np.array([0.0]), np.array([1.0, 5.0, 2.0])) == 2.0


@pytest.mark.parametrize(
    ("n", "m", "discrete"), [(500, 400, False), (700, 300, True), (3000, 3000, True), (3, 90_000, False)]
)
def test_kth_difference_matches_brute_force_beyond_the_brute_force_size(n: int, m: int, discrete: bool) -> None:
    rng = np.random.default_rng(n + m)
    if discrete:
        x, y = np.sort(rng.integers(0, 9, n).astype(float)), np.sort(rng.integers(1, 11, m).astype(float))
    else:
        x, y = np.sort(rng.lognormal(0, 1, n)), np.sort(rng.lognormal(0.2, 1, m))
    assert n * m > distributions._BRUTE_FORCE_PAIRS
    everything = np.sort((y[:, None] - x[None, :]).ravel())
    for k in (1, 2, n * m // 3, n * m // 2, n * m // 2 + 1, n * m - 1, n * m):
        assert distributions.kth_difference(x, y, k) == everything[k - 1]
    assert distributions.hodges_lehmann(x, y) == float(np.median(everything))


def test_moses_interval_order_statistics() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, 12), rng.normal(1, 1, 15)  # continuous: no ties
    everything = np.sort((y[:, None] - x[None, :]).ravel())
    rank = math.floor(12 * 15 / 2 - 1.959964 * math.sqrt(12 * 15 * 28 / 12))
    low, high = distributions.moses_interval(x, y, 0.95)
    assert (low, high) == (everything[rank - 1], everything[12 * 15 - rank])
    assert low < distributions.hodges_lehmann(x, y) < high


def test_mann_whitney_matches_scipy() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.poisson(5, 300).astype(float), rng.poisson(6.5, 80).astype(float)  # many ties
    expected = stats.mannwhitneyu(y, x, alternative="greater").pvalue
    assert distributions.mann_whitney_greater(x, y) == pytest.approx(float(expected), rel=1e-12)
    assert distributions.mann_whitney_greater(x, y) < 0.05 < distributions.mann_whitney_greater(y, x)
    assert distributions.mann_whitney_greater(np.ones(60), np.ones(60)) == 1.0


def test_bootstrap_mean_ratio_matches_scipy_bootstrap() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.lognormal(0, 0.8, 400), rng.lognormal(0.2, 0.8, 120)
    estimate = distributions.bootstrap_mean_ratio(x, y, 0.95)
    assert estimate is not None
    assert estimate.p_value is not None
    reference = stats.bootstrap(
        (y, x),
        lambda a, b, axis=-1: np.mean(a, axis=axis) / np.mean(b, axis=axis),
        n_resamples=distributions.BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(distributions.BOOTSTRAP_SEED),
        batch=max(1, 4_000_000 // 520),
    )
    assert estimate.ratio == pytest.approx(y.mean() / x.mean())
    assert estimate.interval == pytest.approx((reference.confidence_interval.low, reference.confidence_interval.high))
    share_not_larger = float(np.mean(reference.bootstrap_distribution <= 1.0))
    assert estimate.p_value == pytest.approx(share_not_larger, abs=2 / distributions.BOOTSTRAP_RESAMPLES)
    assert estimate.interval[0] < estimate.ratio < estimate.interval[1]


# --- compare: verdicts and guards -----------------------------------------------------------------


def _tracks(runs: RunColumns) -> tuple[RunColumns, RunColumns]:
    return runs.select(~runs.canary), runs.select(runs.canary)


def test_inconclusive_below_the_minimum_canary_runs() -> None:
    rng = np.random.default_rng(1)
    baseline, _ = _tracks(simulate(rng, 5000, 0.0001))
    canary = simulate(rng, 49, 1.0, canary=Profile().with_reason("max_steps", 0.5))
    report = compare(baseline, canary)
    assert report.verdict == "inconclusive"
    assert all(metric.verdict == "inconclusive" for metric in report.metrics)
    assert any("49 canary runs" in reason for reason in report.reasons)


def test_clearly_worse_canary_fails_on_the_right_metrics() -> None:
    rng = np.random.default_rng(2)
    runs = simulate(rng, 10_000, 0.1, canary=Profile(cost_factor=1.5).with_reason("max_steps", 0.2))
    report = compare(*_tracks(runs))
    assert report.verdict == "fail"
    assert report.mode == "fixed"
    failed = {metric.name for metric in report.metrics if metric.verdict == "fail"}
    assert {"stop_reason", "stop_reason:max_steps", "cost_usd", "cost_usd_mean"} <= failed
    assert not failed & {"stop_reason:error", "stop_reason:policy_denied"}
    max_steps = report.metric("stop_reason:max_steps")
    assert max_steps is not None
    assert max_steps.evidence_kind == "p_value"
    assert max_steps.interval is not None
    assert max_steps.interval[0] < 2.5 < max_steps.interval[1]


def test_identical_distributions_pass_with_plenty_of_data() -> None:
    rng = np.random.default_rng(4)
    runs = simulate(rng, 40_000, 0.5)
    report = compare(*_tracks(runs))
    assert report.verdict == "pass", [(m.name, m.verdict, m.reasons) for m in report.metrics if m.verdict != "pass"]
    assert report.baseline_runs + report.canary_runs == 40_000


def test_floors_stop_a_significant_but_tiny_change_from_failing() -> None:
    rng = np.random.default_rng(6)
    baseline_cost, canary_cost = rng.lognormal(0, 0.5, 200_000), rng.lognormal(0.03, 0.5, 200_000)  # +3%
    ones = np.ones(200_000)

    def runs(cost: np.ndarray, canary: bool) -> RunColumns:
        return RunColumns(np.full(len(cost), canary), np.zeros(len(cost), dtype=np.int64), ones, ones, cost, ones)

    report = compare(runs(baseline_cost, False), runs(canary_cost, True), settings=DriftSettings(metrics=("cost_usd",)))
    cost = report.metric("cost_usd")
    assert cost is not None
    assert cost.evidence < 1e-6
    assert cost.verdict == "pass"
    assert report.verdict == "pass"
    # The same for a stop reason: max_steps 8.0% -> 8.6% (1.075x) on 400,000 runs a side.
    baseline = _runs_from_counts(_counts(completed=368_000, max_steps=32_000), canary=False)
    canary = _runs_from_counts(_counts(completed=365_600, max_steps=34_400), canary=True)
    reasons = compare(baseline, canary, settings=DriftSettings(metrics=("stop_reason",)))
    mix, max_steps = reasons.metric("stop_reason"), reasons.metric("stop_reason:max_steps")
    assert mix is not None
    assert max_steps is not None
    assert mix.evidence < 1e-10
    assert max_steps.evidence < 1e-10
    assert reasons.verdict == "pass"
    assert max_steps.verdict == "pass"


def test_compare_takes_run_records() -> None:
    def record(track: str, reason: str, cost: float) -> RunRecord:
        return RunRecord(track, reason, steps=3, tool_calls=1, cost_usd=cost, duration_s=2.0)

    baseline = [record("baseline", "completed" if i % 10 else "max_steps", 0.01 + i % 7 / 1000) for i in range(600)]
    canary = [record("canary", "max_steps" if i % 2 else "completed", 0.02 + i % 7 / 1000) for i in range(60)]
    canary.append(record("canary", "not-a-known-reason", 0.02))  # counted as `other`
    report = compare(baseline, canary)
    assert report.canary_runs == 61
    assert report.verdict == "fail"
    assert report.metric("stop_reason:other") is not None
    assert report.to_dict()["metrics"][0]["name"] == "stop_reason"


def test_bad_input_is_a_clear_error() -> None:
    ok = RunRecord("baseline", "completed", 1, 0, 0.01, 1.0)
    with pytest.raises(ValueError, match="empty"):
        compare([], [])
    with pytest.raises(ValueError, match="NaN"):
        compare([ok], [RunRecord("canary", "completed", 1, 0, math.nan, 1.0)])
    with pytest.raises(ValueError, match="negative"):
        compare([ok], [RunRecord("canary", "completed", -1, 0, 0.01, 1.0)])
    with pytest.raises(ValueError, match="alpha"):
        compare([ok], [ok], alpha=1.5)
    with pytest.raises(ValueError, match="metrics"):
        DriftSettings(metrics=("latency",))
    with pytest.raises(ValueError, match="count vectors"):
        stopreasons.stop_reason_log_evalue(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64), 0.1)
    with pytest.raises(ValueError, match="canary_share"):
        stopreasons.stop_reason_log_evalue(_counts(completed=1), _counts(completed=1), 1.0)


def test_delta_method_mean_ratio_by_hand() -> None:
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    estimate = distributions.delta_mean_ratio(x, y, 0.95)
    assert estimate is not None
    assert estimate.p_value is not None
    spread = math.sqrt(np.var(x, ddof=1) / (4 * 2.5**2) + np.var(y, ddof=1) / (5 * 4.0**2))
    assert estimate.ratio == pytest.approx(1.6)
    assert estimate.interval == pytest.approx((1.6 * math.exp(-1.959964 * spread), 1.6 * math.exp(1.959964 * spread)))
    assert estimate.p_value == pytest.approx(float(stats.norm.sf(math.log(1.6) / spread)))
    assert distributions.delta_mean_ratio(np.zeros(5), y, 0.95) is None


def test_mean_ratio_of_an_empty_side_is_none_without_a_warning() -> None:
    import warnings

    import numpy as np

    from agentwatch.collectors.drift.distributions import delta_mean_ratio

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" must not be reached
        assert delta_mean_ratio(np.array([], dtype=float), np.array([1.0, 2.0]), 0.95) is None
        assert delta_mean_ratio(np.array([1.0, 2.0]), np.array([], dtype=float), 0.95) is None
