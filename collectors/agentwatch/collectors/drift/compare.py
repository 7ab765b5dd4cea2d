"""Fixed-horizon comparison: one decision on the runs collected so far.

Valid for a single look at a sample size chosen in advance. Looking again and again as data
arrive inflates false alarms (the drift benchmark measures by how much); continuous monitoring
belongs to ``SequentialMonitor``. Alpha is split evenly across the metric families tested
(Bonferroni); within the stop-reason family the per-reason tests are Holm-corrected. The mix is
a G-test (reasons below five expected runs pooled), each bad reason a one-sided Fisher exact test;
cost, steps, tool calls and duration a one-sided Mann-Whitney test with the Hodges-Lehmann shift;
the mean cost a seeded percentile bootstrap of the ratio of means (the delta method above
``distributions.BOOTSTRAP_MAX_RUNS`` runs). Practical floors: see ``config.Floors``.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentwatch.collectors.drift import distributions, stopreasons
from agentwatch.collectors.drift.assess import (
    Evidence,
    build_report,
    distribution_metric,
    mean_ratio_metric,
    reason_effects,
    reason_metrics,
    sample_shortfall,
)
from agentwatch.collectors.drift.columns import RunColumns, columns_from_records
from agentwatch.collectors.drift.config import (
    COST_MEAN_METRIC,
    DISTRIBUTION_METRICS,
    STOP_REASON_METRIC,
    DriftSettings,
    check_alpha,
)
from agentwatch.collectors.drift.model import DriftReport, MetricDrift, RunRecord


def compare(
    baseline: Sequence[RunRecord] | RunColumns,
    canary: Sequence[RunRecord] | RunColumns,
    *,
    alpha: float = 0.05,
    settings: DriftSettings | None = None,
) -> DriftReport:
    """Is the canary worse than the baseline? A fixed-horizon report (p-values) on the given runs.

    ``baseline`` and ``canary`` are the two tracks' runs (their ``track`` field is not consulted).
    Intervals are two-sided at 1 - alpha.
    """
    alpha = check_alpha(alpha)
    settings = settings or DriftSettings()
    base = baseline if isinstance(baseline, RunColumns) else columns_from_records(baseline, canary=False)
    cand = canary if isinstance(canary, RunColumns) else columns_from_records(canary, canary=True)
    if len(base) == 0 and len(cand) == 0:
        raise ValueError("compare needs runs: both baseline and canary are empty")
    family_alpha = settings.family_alpha(alpha)
    confidence = 1.0 - alpha
    metrics: list[MetricDrift] = []
    for family in settings.metrics:
        if family == STOP_REASON_METRIC:
            metrics.extend(_stop_reasons(base, cand, family_alpha, settings, confidence))
        elif family == COST_MEAN_METRIC:
            metrics.append(_mean_cost(base, cand, family_alpha, settings, confidence))
        elif family in DISTRIBUTION_METRICS:
            metrics.append(
                _distribution(family, base, cand, family_alpha=family_alpha, settings=settings, confidence=confidence)
            )
    return build_report(
        metrics, baseline_runs=len(base), canary_runs=len(cand), mode="fixed", alpha=alpha, settings=settings
    )


def _stop_reasons(
    base: RunColumns, cand: RunColumns, family_alpha: float, settings: DriftSettings, confidence: float
) -> list[MetricDrift]:
    baseline_counts, canary_counts = stopreasons.counts_of(base.reason), stopreasons.counts_of(cand.reason)
    mix = stopreasons.g_test(baseline_counts, canary_counts, settings.guards.min_expected_per_cell)
    mix_p = mix.p_value if mix is not None else 1.0
    mix_evidence = Evidence(mix_p, "p_value", mix_p <= family_alpha, family_alpha)
    effects = reason_effects(baseline_counts, canary_counts, confidence)
    n_b, n_c = len(base), len(cand)
    raw = [
        stopreasons.fisher_greater(int(baseline_counts[e.index]), n_b, int(canary_counts[e.index]), n_c)
        for e in effects
    ]
    adjusted = stopreasons.holm(raw)
    reason_evidence = {
        effect.index: Evidence(p, "p_value", p <= family_alpha, family_alpha)
        for effect, p in zip(effects, adjusted, strict=True)
    }
    return reason_metrics(
        baseline_counts,
        canary_counts,
        mix_evidence=mix_evidence,
        reason_evidence=reason_evidence,
        settings=settings,
        confidence=confidence,
    )


def _distribution(
    name: str, base: RunColumns, cand: RunColumns, *, family_alpha: float, settings: DriftSettings, confidence: float
) -> MetricDrift:
    x, y = base.values(name), cand.values(name)
    p = distributions.mann_whitney_greater(x, y) if len(x) and len(y) else 1.0
    evidence = Evidence(p, "p_value", p <= family_alpha, family_alpha)
    return distribution_metric(name, x, y, evidence=evidence, settings=settings, confidence=confidence)


def _mean_cost(
    base: RunColumns, cand: RunColumns, family_alpha: float, settings: DriftSettings, confidence: float
) -> MetricDrift:
    x, y = base.cost_usd, cand.cost_usd
    enough = sample_shortfall(len(x), len(y), settings) is None
    if not enough:
        estimate = None
    elif len(x) + len(y) <= distributions.BOOTSTRAP_MAX_RUNS:
        estimate = distributions.bootstrap_mean_ratio(x, y, confidence)
    else:
        estimate = distributions.delta_mean_ratio(x, y, confidence)
    p = estimate.p_value if estimate is not None and estimate.p_value is not None else 1.0
    evidence = Evidence(p, "p_value", p <= family_alpha, family_alpha)
    return mean_ratio_metric(
        COST_MEAN_METRIC, x, y, estimate=estimate, evidence=evidence, settings=settings, confidence=confidence
    )
