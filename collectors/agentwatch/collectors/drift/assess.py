"""From statistics to verdicts: the rules ``compare`` and ``SequentialMonitor`` share.

Per metric: below the minimum samples, ``inconclusive``. ``fail`` needs both credible evidence
(the caller decides: a corrected p-value <= alpha or an e-value >= its threshold) and a point
estimate at or beyond the practical floor. ``pass`` needs the interval to rule the floor out (the
upper end below it): enough data to say the canary is not worse by a margin that matters.
Anything else is ``inconclusive``: the canary might be worse, the data cannot tell yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from agentwatch.collectors.drift import distributions, stopreasons
from agentwatch.collectors.drift.config import (
    STOP_REASON_CATEGORIES,
    STOP_REASON_METRIC,
    DriftSettings,
    reason_metric,
)
from agentwatch.collectors.drift.distributions import FloatArray, RatioEstimate
from agentwatch.collectors.drift.model import DriftReport, EvidenceKind, MetricDrift, Verdict, worst
from agentwatch.collectors.drift.stopreasons import CountArray


@dataclass(frozen=True, slots=True)
class Evidence:
    """A test's outcome: its value (p or e), the kind, and whether it clears the (corrected) threshold."""

    value: float
    kind: EvidenceKind
    significant: bool
    threshold: float

    def describe(self) -> str:
        if self.kind == "e_value":
            return f"e-value {_number(self.value)} (threshold {_number(self.threshold)})"
        return f"p-value {_number(self.value)} (threshold {_number(self.threshold)})"


def _number(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def sample_shortfall(baseline_runs: int, canary_runs: int, settings: DriftSettings) -> str | None:
    """Why there are too few runs to judge, or None."""
    guards = settings.guards
    if canary_runs < guards.min_canary_runs:
        return f"{canary_runs} canary runs, at least {guards.min_canary_runs} needed"
    if baseline_runs < guards.min_baseline_runs:
        return f"{baseline_runs} baseline runs, at least {guards.min_baseline_runs} needed"
    return None


def _verdict(shortfall: str | None, fails: bool, rules_out_floor: bool) -> Verdict:
    if shortfall is not None:
        return "inconclusive"
    if fails:
        return "fail"
    return "pass" if rules_out_floor else "inconclusive"


def distribution_metric(
    name: str,
    baseline: FloatArray,
    canary: FloatArray,
    *,
    evidence: Evidence,
    settings: DriftSettings,
    confidence: float,
) -> MetricDrift:
    """A rank-compared metric: evidence from ranks, effect the Hodges-Lehmann shift, floor on the mean.

    The practical floor ("up 10%") is judged on the ratio of means and its delta-method interval:
    a median shift is too coarse for counts such as steps, where it jumps from 0 to a whole step.
    """
    floor = settings.floors.relative_increase
    shortfall = sample_shortfall(len(baseline), len(canary), settings)
    if len(baseline) == 0 or len(canary) == 0:
        why = shortfall or "no runs on one side"
        summaries = distributions.summary(baseline), distributions.summary(canary)
        return MetricDrift(name, "inconclusive", *summaries, None, None, evidence.value, evidence.kind, (why,))
    shift = distributions.hodges_lehmann(baseline, canary)
    low, high = distributions.moses_interval(baseline, canary, confidence)
    ratio = distributions.delta_mean_ratio(baseline, canary, confidence)
    if ratio is not None:
        relative, relative_high = ratio.ratio - 1.0, ratio.interval[1] - 1.0
    else:  # a zero mean: any canary increase over an all-zero baseline is unbounded
        relative = relative_high = _sign_inf(float(canary.mean()) - float(baseline.mean()))
    fails = evidence.significant and relative >= floor
    verdict = _verdict(shortfall, fails, relative_high < floor)
    described = (
        f"{name}: canary shifted by {shift:+.4g} (Hodges-Lehmann, {confidence:.0%} interval [{low:.4g}, {high:.4g}]), "
        f"mean {relative:+.1%}; {evidence.describe()}"
    )
    reasons = [shortfall] if shortfall else []
    reasons.append(described)
    if verdict == "fail":
        reasons.append(f"{name} is larger on the canary by at least the {floor:.0%} floor")
    elif verdict == "pass":
        reasons.append(f"an increase of {floor:.0%} or more is ruled out")
    elif shortfall is None:
        reasons.append(f"an increase of {floor:.0%} cannot be ruled out yet")
    summaries = distributions.summary(baseline), distributions.summary(canary)
    return MetricDrift(name, verdict, *summaries, shift, (low, high), evidence.value, evidence.kind, tuple(reasons))


def _sign_inf(value: float) -> float:
    return math.inf if value > 0 else 0.0


def mean_ratio_metric(
    name: str,
    baseline: FloatArray,
    canary: FloatArray,
    *,
    estimate: RatioEstimate | None,
    evidence: Evidence,
    settings: DriftSettings,
    confidence: float,
) -> MetricDrift:
    """Ratio of means (budgets add up): fail when credibly above 1 + floor, pass when the interval is below it."""
    floor = 1.0 + settings.floors.relative_increase
    shortfall = sample_shortfall(len(baseline), len(canary), settings)
    base, cand = _mean_summary(baseline), _mean_summary(canary)
    if estimate is None:
        why = shortfall or "the baseline (or canary) mean is zero: no ratio"
        return MetricDrift(name, "inconclusive", base, cand, None, None, evidence.value, evidence.kind, (why,))
    fails = evidence.significant and estimate.ratio >= floor
    verdict = _verdict(shortfall, fails, estimate.interval[1] < floor)
    reasons = [shortfall] if shortfall else []
    reasons.append(
        f"{name}: canary mean is {estimate.ratio:.3f}x the baseline's, {confidence:.0%} interval "
        f"[{estimate.interval[0]:.3f}, {estimate.interval[1]:.3f}]; {evidence.describe()}"
    )
    if verdict == "fail":
        reasons.append(f"mean cost per run is up by at least {floor - 1:.0%}")
    elif verdict == "pass":
        reasons.append(f"a mean increase of {floor - 1:.0%} or more is ruled out")
    return MetricDrift(
        name, verdict, base, cand, estimate.ratio, estimate.interval, evidence.value, evidence.kind, tuple(reasons)
    )


def _mean_summary(values: FloatArray) -> dict[str, float]:
    if len(values) == 0:
        return {"n": 0.0}
    return {"n": float(len(values)), "mean": float(values.mean()), "total": float(values.sum())}


@dataclass(frozen=True, slots=True)
class ReasonEffect:
    """One bad reason's shares, risk ratio and difference, with intervals."""

    index: int
    baseline_share: float
    canary_share: float
    ratio: float
    ratio_interval: tuple[float, float]
    difference: float
    difference_interval: tuple[float, float]
    expected_canary: float

    @property
    def reason(self) -> str:
        return STOP_REASON_CATEGORIES[self.index]


def reason_effects(baseline: CountArray, canary: CountArray, confidence: float) -> list[ReasonEffect]:
    """Effects of every bad reason seen on either side (the closed set bounds how many)."""
    n_b, n_c = int(baseline.sum()), int(canary.sum())
    effects = []
    for index in range(1, len(STOP_REASON_CATEGORIES)):
        b, c = int(baseline[index]), int(canary[index])
        if b + c == 0 or n_b == 0 or n_c == 0:
            continue
        ratio, ratio_interval = stopreasons.risk_ratio(b, n_b, c, n_c, confidence)
        difference, difference_interval = stopreasons.share_difference(b, n_b, c, n_c, confidence)
        expected = n_c * (b + c) / (n_b + n_c)
        effects.append(
            ReasonEffect(index, b / n_b, c / n_c, ratio, ratio_interval, difference, difference_interval, expected)
        )
    return effects


def reason_metrics(
    baseline: CountArray,
    canary: CountArray,
    *,
    mix_evidence: Evidence,
    reason_evidence: Mapping[int, Evidence],
    settings: DriftSettings,
    confidence: float,
    distrust: str | None = None,
) -> list[MetricDrift]:
    """The ``stop_reason`` mix metric, then one ``stop_reason:<reason>`` metric per bad reason seen.

    A reason can fail only with enough expected canary runs (the cell guard), credible evidence of
    its own and the mix's, and both floors reached. ``distrust`` (e.g. a traffic-share mismatch)
    turns would-be fails into ``inconclusive`` with that reason.
    """
    floors, guards = settings.floors, settings.guards
    n_b, n_c = int(baseline.sum()), int(canary.sum())
    shortfall = sample_shortfall(n_b, n_c, settings)
    effects = reason_effects(baseline, canary, confidence)
    per_reason: list[MetricDrift] = []
    over_floor = []
    for effect in effects:
        enough = effect.expected_canary >= guards.min_expected_per_cell
        at_floor = effect.ratio >= floors.reason_ratio and effect.difference >= floors.reason_points
        if enough and at_floor:
            over_floor.append(effect)
        evidence = reason_evidence[effect.index]
        fails = enough and at_floor and evidence.significant and mix_evidence.significant
        rules_out = (
            effect.ratio_interval[1] < floors.reason_ratio or effect.difference_interval[1] < floors.reason_points
        )
        verdict = _verdict(shortfall, fails, rules_out)
        reasons = [shortfall] if shortfall else []
        reasons.append(
            f"{effect.reason}: {effect.canary_share:.2%} of canary runs vs {effect.baseline_share:.2%} of baseline "
            f"runs, ratio {effect.ratio:.2f} [{effect.ratio_interval[0]:.2f}, {effect.ratio_interval[1]:.2f}]; "
            f"{evidence.describe()}"
        )
        if not enough and shortfall is None:
            reasons.append(
                f"{effect.expected_canary:.1f} canary runs expected, {guards.min_expected_per_cell:g} needed"
            )
        if verdict == "fail" and distrust:
            verdict, reasons = "inconclusive", [*reasons, distrust]
        baseline_side = {"n": float(n_b), "count": float(baseline[effect.index]), "share": effect.baseline_share}
        canary_side = {"n": float(n_c), "count": float(canary[effect.index]), "share": effect.canary_share}
        per_reason.append(
            MetricDrift(
                name=reason_metric(effect.reason),
                verdict=verdict,
                baseline=baseline_side,
                canary=canary_side,
                effect=effect.ratio,
                interval=effect.ratio_interval,
                evidence=evidence.value,
                evidence_kind=evidence.kind,
                reasons=tuple(reasons),
            )
        )
    bad_b, bad_c = n_b - int(baseline[0]), n_c - int(canary[0])
    if n_b and n_c and bad_b + bad_c:
        ratio, interval = stopreasons.risk_ratio(bad_b, n_b, bad_c, n_c, confidence)
        effect_value: float | None = ratio
        effect_interval: tuple[float, float] | None = interval
    else:
        effect_value, effect_interval = None, None
    fails = mix_evidence.significant and bool(over_floor)
    verdict = _verdict(shortfall, fails, all(item.verdict == "pass" for item in per_reason))
    reasons = [shortfall] if shortfall else []
    reasons.append(f"stop-reason mix: {mix_evidence.describe()}")
    if fails:
        reasons.extend(
            f"{item.reason} up {item.ratio:.2f}x ({item.baseline_share:.2%} -> {item.canary_share:.2%})"
            for item in over_floor
        )
    if verdict == "fail" and distrust:
        verdict, reasons = "inconclusive", [*reasons, distrust]
    mix = MetricDrift(
        name=STOP_REASON_METRIC,
        verdict=verdict,
        baseline=_shares(baseline),
        canary=_shares(canary),
        effect=effect_value,
        interval=effect_interval,
        evidence=mix_evidence.value,
        evidence_kind=mix_evidence.kind,
        reasons=tuple(reasons),
    )
    return [mix, *per_reason]


def _shares(counts: CountArray) -> dict[str, float]:
    total = int(counts.sum())
    shares = {"n": float(total)}
    if total:
        shares["bad_share"] = 1.0 - float(counts[0]) / total
    return shares


def build_report(
    metrics: list[MetricDrift],
    *,
    baseline_runs: int,
    canary_runs: int,
    mode: Literal["fixed", "sequential"],
    alpha: float,
    settings: DriftSettings,
    extra: Sequence[str] = (),
) -> DriftReport:
    """The report: the worst metric's verdict and the reasons a release engineer reads first."""
    verdict = worst([item.verdict for item in metrics])
    reasons: list[str] = list(extra)
    shortfall = sample_shortfall(baseline_runs, canary_runs, settings)
    if shortfall:
        reasons.append(shortfall)
    failed = [item.name for item in metrics if item.verdict == "fail"]
    open_ = [item.name for item in metrics if item.verdict == "inconclusive"]
    if failed:
        reasons.append(f"canary is worse on {', '.join(failed)}")
    elif open_ and not shortfall:
        reasons.append(f"not enough evidence yet on {', '.join(open_)}")
    elif verdict == "pass":
        reasons.append("no metric is worse beyond its floor")
    reasons.append(f"alpha {alpha:g} split over {len(settings.metrics)} metric families: {', '.join(settings.metrics)}")
    return DriftReport(
        verdict=verdict,
        metrics=tuple(metrics),
        baseline_runs=baseline_runs,
        canary_runs=canary_runs,
        mode=mode,
        alpha=alpha,
        reasons=tuple(reasons),
    )
