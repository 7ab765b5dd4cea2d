"""The drift analysis's data: one finished run in, a report with per-metric evidence and a verdict out.

These types are the contract between the statistical core (``compare``, ``SequentialMonitor``), the
analyzer that reads ``agent_runs`` and publishes the gauges, and ``agentwatch drift``. They are
plain frozen values with a JSON form, so a report prints, serialises and compares the same way
wherever it was computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Verdict = Literal["pass", "fail", "inconclusive"]
"""``fail``: the canary is worse beyond the practical floor, with enough evidence. ``pass``: enough
data and no such difference. ``inconclusive``: too little data to say either."""

VERDICTS: Final[tuple[Verdict, ...]] = ("pass", "inconclusive", "fail")
"""Ordered by severity: the report's verdict is the worst of its metrics'."""

EvidenceKind = Literal["e_value", "p_value"]
"""``e_value``: anytime-valid (reject when ≥ 1/alpha). ``p_value``: fixed-horizon (reject when ≤ alpha,
after the multiple-testing correction the metric names in its reasons)."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One finished run, as ``agent_runs`` stores it. ``track`` is ``stable``, ``canary`` or ``baseline``."""

    track: str
    stop_reason: str
    steps: int
    tool_calls: int
    cost_usd: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class MetricDrift:
    """The comparison of one metric between baseline and canary.

    ``name`` is the metric (``stop_reason``, ``stop_reason:<reason>``, ``cost_usd``, ``steps``,
    ``tool_calls``, ``duration_s``, ``cost_usd_mean``); it is the ``metric`` label of the gauges.
    ``baseline`` and ``canary`` summarise each side (``n`` and the statistics the test used, e.g.
    ``share``, ``median``, ``mean``). ``effect`` is the canary's difference in the metric's natural
    unit (a risk ratio for a stop reason, a shift or ratio for a distribution) and ``interval`` its
    confidence interval (``None`` where none applies). ``evidence`` is an e-value or a p-value as
    ``evidence_kind`` says. ``reasons`` explain the verdict in words a release engineer acts on.
    """

    name: str
    verdict: Verdict
    baseline: Mapping[str, float]
    canary: Mapping[str, float]
    effect: float | None
    interval: tuple[float, float] | None
    evidence: float
    evidence_kind: EvidenceKind
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``agentwatch drift --json``)."""
        return {
            "name": self.name,
            "verdict": self.verdict,
            "baseline": dict(self.baseline),
            "canary": dict(self.canary),
            "effect": self.effect,
            "interval": list(self.interval) if self.interval is not None else None,
            "evidence": self.evidence,
            "evidence_kind": self.evidence_kind,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class DriftReport:
    """Canary against baseline: the overall verdict (the worst metric's), why, and every metric."""

    verdict: Verdict
    metrics: tuple[MetricDrift, ...]
    baseline_runs: int
    canary_runs: int
    mode: Literal["fixed", "sequential"]
    alpha: float
    reasons: tuple[str, ...] = field(default=())

    def metric(self, name: str) -> MetricDrift | None:
        """The metric called ``name``, or None."""
        return next((item for item in self.metrics if item.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``agentwatch drift --json``)."""
        return {
            "verdict": self.verdict,
            "mode": self.mode,
            "alpha": self.alpha,
            "baseline_runs": self.baseline_runs,
            "canary_runs": self.canary_runs,
            "reasons": list(self.reasons),
            "metrics": [item.to_dict() for item in self.metrics],
        }


def worst(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict:
    """The most severe verdict (``fail`` > ``inconclusive`` > ``pass``); ``inconclusive`` when empty."""
    if not verdicts:
        return "inconclusive"
    return max(verdicts, key=VERDICTS.index)
