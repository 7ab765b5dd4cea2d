"""SequentialMonitor: determinism across batchings, error control under no change, detection, guards."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from agentwatch.collectors.drift import (
    BAD_STOP_REASONS,
    METRIC_FAMILIES,
    DriftSettings,
    RunColumns,
    RunRecord,
    SequentialMonitor,
    betting,
    stop_reason_log_evalue,
    stopreasons,
)
from agentwatch.collectors.drift.simulation import Profile, simulate


def _batches(runs: RunColumns, edges: list[int]) -> list[RunColumns]:
    positions = np.arange(len(runs))
    return [runs.select((positions >= start) & (positions < end)) for start, end in itertools.pairwise(edges)]


def test_same_records_same_report_however_batched() -> None:
    runs = simulate(np.random.default_rng(1), 6000, 0.1, canary=Profile(cost_factor=1.1))
    whole = SequentialMonitor(canary_share=0.1)
    at_once = whole.update(runs)
    rng = np.random.default_rng(2)
    edges = sorted({0, len(runs), *rng.integers(1, len(runs), 40).tolist()})
    piecewise = SequentialMonitor(canary_share=0.1)
    for batch in _batches(runs, edges):
        report = piecewise.update(batch)
    assert report == at_once  # every e-value, interval and reason, bit for bit
    assert piecewise.log_evalues() == whole.log_evalues()
    assert at_once.mode == "sequential"
    assert all(metric.evidence_kind == "e_value" for metric in at_once.metrics)


def test_evalues_are_what_the_count_helpers_and_the_stream_path_give() -> None:
    runs = simulate(np.random.default_rng(3), 4000, 0.2)
    monitor = SequentialMonitor(canary_share=0.2)
    monitor.extend(runs)
    evidence = monitor.log_evalues()
    baseline = stopreasons.counts_of(runs.reason[~runs.canary])
    canary = stopreasons.counts_of(runs.reason[runs.canary])
    assert evidence["stop_reason"] == stop_reason_log_evalue(baseline, canary, 0.2)
    for name in ("cost_usd", "steps", "tool_calls", "duration_s"):
        path = betting.log_evalue_path(runs.values(name), runs.canary, 0.2, "rank")
        assert evidence[name] == pytest.approx(float(path[-1]), abs=1e-9)
    mean_path = betting.log_evalue_path(runs.cost_usd, runs.canary, 0.2, "mean")
    assert evidence["cost_usd_mean"] == pytest.approx(float(mean_path[-1]), abs=1e-9)


def test_betting_factors_are_a_fair_game_under_no_change() -> None:
    # Under H0 the canary coin is independent of the score, so each factor averages exactly 1:
    # check it on an exhaustive average over the coin for fixed scores.
    scores = np.linspace(-1, 1, 41)
    share = 0.1
    for bet in betting.bet_sizes(share):
        factors = share * (1 + bet * (1 - share) * scores) + (1 - share) * (1 + bet * (0 - share) * scores)
        assert np.allclose(factors, 1.0)
        assert np.all(1 + bet * (1 - share) * scores > 0)  # and never reaches zero: a valid bet
        assert np.all(1 - bet * share * scores > 0)


def _ever_fails(runs: RunColumns, look_every: int, alpha: float) -> bool:
    monitor = SequentialMonitor(canary_share=0.1, alpha=alpha)
    for batch in _batches(runs, list(range(0, len(runs) + 1, look_every))):
        monitor.extend(batch)
        if monitor.alarm_possible() and monitor.report().verdict == "fail":
            return True
    return False


def test_no_change_streams_rarely_fail_at_any_look() -> None:
    """Ville's bound: P(ever fail) <= alpha; checked at a loose alpha so a broken test would show."""
    rng = np.random.default_rng(20240601)
    streams, alpha = 60, 0.2
    alarms = sum(_ever_fails(simulate(rng, 3000, 0.1), 100, alpha) for _ in range(streams))
    # Binomial(60, 0.2) exceeds 20 with probability < 1%; the floors make the real rate far lower.
    assert alarms <= 20


def test_evalue_stays_small_under_no_change_while_a_naive_test_would_alarm() -> None:
    """The supremum over looks of the mix e-value stays below 1/alpha in most no-change streams."""
    from scipy.stats import chi2_contingency  # type: ignore[import-untyped]

    rng = np.random.default_rng(77)
    crossed = naive = 0
    for _ in range(40):
        runs = simulate(rng, 3000, 0.1)
        one_hot = np.eye(len(stopreasons.counts_of(runs.reason)), dtype=np.int64)[runs.reason]
        looks = np.arange(100, 3001, 100) - 1
        canary = np.cumsum(one_hot * runs.canary[:, None], axis=0)[looks]
        baseline = np.cumsum(one_hot * ~runs.canary[:, None], axis=0)[looks]
        path = stopreasons.reason_log_evalues(baseline, canary, 0.1).sum(axis=1)
        crossed += bool(np.any(path >= math.log(1 / 0.1)))
        # Naive: a chi-square test of completed vs not at every look, at 0.1.
        tables = [[[b[0], b.sum() - b[0]], [c[0], c.sum() - c[0]]] for b, c in zip(baseline, canary, strict=True)]
        naive += any(chi2_contingency(t, correction=False).pvalue <= 0.1 for t in tables if min(np.sum(t, 0)) > 0)
    assert crossed <= 6  # Ville: at most 10% in expectation (4 of 40)
    assert naive > crossed  # repeated fixed-horizon tests alarm far more often


def test_clearly_worse_canary_fails_and_names_the_reason() -> None:
    runs = simulate(np.random.default_rng(5), 8000, 0.1, canary=Profile(cost_factor=1.6).with_reason("max_steps", 0.25))
    report = SequentialMonitor(canary_share=0.1).update(runs)
    assert report.verdict == "fail"
    failed = {metric.name for metric in report.metrics if metric.verdict == "fail"}
    assert {"stop_reason", "stop_reason:max_steps", "cost_usd", "cost_usd_mean"} <= failed
    max_steps = report.metric("stop_reason:max_steps")
    assert max_steps is not None
    assert max_steps.evidence >= len(BAD_STOP_REASONS) / (0.05 / len(METRIC_FAMILIES))  # per-reason threshold
    assert any("max_steps up" in reason for metric in report.metrics for reason in metric.reasons)


def test_identical_tracks_pass_with_plenty_of_data() -> None:
    runs = simulate(np.random.default_rng(8), 30_000, 0.5)
    report = SequentialMonitor(canary_share=0.5).update(runs)
    assert report.verdict == "pass", [(m.name, m.reasons) for m in report.metrics if m.verdict != "pass"]


def test_inconclusive_below_fifty_canary_runs_even_with_strong_evidence() -> None:
    runs = simulate(np.random.default_rng(9), 400, 0.1, canary=Profile().with_reason("max_steps", 0.9))
    assert int(runs.canary.sum()) < 50
    report = SequentialMonitor(canary_share=0.1).update(runs)
    assert report.verdict == "inconclusive"
    assert any("canary runs, at least 50 needed" in reason for reason in report.reasons)


def test_traffic_share_mismatch_blocks_stop_reason_fails() -> None:
    runs = simulate(np.random.default_rng(10), 6000, 0.3)  # configured 10%, real 30%: nothing else changed
    report = SequentialMonitor(canary_share=0.1).update(runs)
    mix = report.metric("stop_reason")
    assert mix is not None
    assert mix.verdict != "fail"
    assert any("not the configured 10.00%" in reason for reason in report.reasons)


def test_partial_report_equals_the_full_reports_metrics() -> None:
    monitor = SequentialMonitor(canary_share=0.1)
    monitor.extend(simulate(np.random.default_rng(11), 3000, 0.1))
    full = {metric.name: metric for metric in monitor.report().metrics}
    partial = monitor.report(["steps", "cost_usd_mean"])
    assert [metric.name for metric in partial.metrics] == ["steps", "cost_usd_mean"]
    assert all(metric == full[metric.name] for metric in partial.metrics)
    with pytest.raises(ValueError, match="not monitored"):
        SequentialMonitor(canary_share=0.1, settings=DriftSettings(metrics=("steps",))).report(["cost_usd"])


def test_records_in_arrival_order_with_tracks() -> None:
    monitor = SequentialMonitor(canary_share=0.5)
    records = [
        RunRecord("canary" if i % 2 else ("baseline" if i % 4 else "stable"), "completed", 3, 1, 0.01, 1.0)
        for i in range(200)
    ]
    report = monitor.update(records)
    assert (report.baseline_runs, report.canary_runs) == (100, 100)
    assert monitor.update([]).canary_runs == 100


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_bad_share_is_a_clear_error(share: float) -> None:
    with pytest.raises(ValueError, match="canary_share"):
        SequentialMonitor(canary_share=share)


def test_bad_records_are_a_clear_error() -> None:
    monitor = SequentialMonitor(canary_share=0.1)
    with pytest.raises(ValueError, match="NaN"):
        monitor.update([RunRecord("canary", "completed", 1, 0, 0.01, math.nan)])
    with pytest.raises(ValueError, match="unknown track"):
        monitor.update([RunRecord("shadow", "completed", 1, 0, 0.01, 1.0)])
    with pytest.raises(ValueError, match="alpha"):
        SequentialMonitor(canary_share=0.1, alpha=0.0)
    assert monitor.canary_runs == 0  # rejected batches leave the state untouched
