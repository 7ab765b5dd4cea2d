"""The drift analysis's knobs: which metrics are tested, the minimum samples and the practical floors.

A difference only fails a canary when it is both statistically credible and large enough to matter:
the floors say how large. Defaults follow what a release engineer would act on: a bad stop reason
up at least 1.5x *and* at least one percentage point, cost or steps up at least 10%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from agentwatch.instrumentation.semconv import STOP_REASON_OTHER, STOP_REASONS, StopReason

GOOD_STOP_REASON: Final = StopReason.COMPLETED.value
BAD_STOP_REASONS: Final[tuple[str, ...]] = (
    *sorted(reason for reason in STOP_REASONS if reason != GOOD_STOP_REASON),
    STOP_REASON_OTHER,
)
"""Every reason a run can end with except ``completed``; reasons outside the closed set count as ``other``."""
STOP_REASON_CATEGORIES: Final[tuple[str, ...]] = (GOOD_STOP_REASON, *BAD_STOP_REASONS)

CANARY_TRACK: Final = "canary"
BASELINE_TRACKS: Final[tuple[str, ...]] = ("baseline", "stable")

# Metric names: the `metric` label of the gauges, so the set is closed (per-reason names come from
# the closed stop-reason set above).
STOP_REASON_METRIC: Final = "stop_reason"
COST_METRIC: Final = "cost_usd"
COST_MEAN_METRIC: Final = "cost_usd_mean"
STEPS_METRIC: Final = "steps"
TOOL_CALLS_METRIC: Final = "tool_calls"
DURATION_METRIC: Final = "duration_s"
DISTRIBUTION_METRICS: Final[tuple[str, ...]] = (COST_METRIC, STEPS_METRIC, TOOL_CALLS_METRIC, DURATION_METRIC)
"""Compared by rank (one-sided Mann-Whitney, or its sequential betting form): is the canary larger?"""
METRIC_FAMILIES: Final[tuple[str, ...]] = (STOP_REASON_METRIC, *DISTRIBUTION_METRICS, COST_MEAN_METRIC)
"""The tests alpha is split across (Bonferroni); per-reason metrics are part of ``stop_reason``'s share."""


def reason_metric(reason: str) -> str:
    """Metric name of one stop reason (``stop_reason:max_steps``)."""
    return f"{STOP_REASON_METRIC}:{reason}"


def normalise_reason(reason: str) -> str:
    """The reason itself when it is in the closed set, else ``other``."""
    return reason if reason in STOP_REASONS else STOP_REASON_OTHER


@dataclass(frozen=True, slots=True)
class Floors:
    """Practical significance: the smallest worsening that fails a canary.

    ``reason_ratio`` and ``reason_points`` must both be reached by a bad stop reason (canary share
    over baseline share, and canary share minus baseline share); ``relative_increase`` applies to
    cost, steps, tool calls and duration (0.10: 10% larger).
    """

    reason_ratio: float = 1.5
    reason_points: float = 0.01
    relative_increase: float = 0.10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.reason_ratio) and self.reason_ratio >= 1.0):
            raise ValueError(f"reason_ratio must be a finite number >= 1, got {self.reason_ratio!r}")
        if not (math.isfinite(self.reason_points) and 0.0 <= self.reason_points < 1.0):
            raise ValueError(f"reason_points must be in [0, 1), got {self.reason_points!r}")
        if not (math.isfinite(self.relative_increase) and self.relative_increase >= 0.0):
            raise ValueError(f"relative_increase must be a finite number >= 0, got {self.relative_increase!r}")


MIN_CANARY_RUNS: Final = 50
MIN_BASELINE_RUNS: Final = 50
MIN_EXPECTED_PER_CELL: Final = 5.0


@dataclass(frozen=True, slots=True)
class Guards:
    """Minimum samples: below them a metric is ``inconclusive`` whatever its evidence says."""

    min_canary_runs: int = MIN_CANARY_RUNS
    min_baseline_runs: int = MIN_BASELINE_RUNS
    min_expected_per_cell: float = MIN_EXPECTED_PER_CELL

    def __post_init__(self) -> None:
        if self.min_canary_runs < 1 or self.min_baseline_runs < 1:
            raise ValueError("minimum run counts must be at least 1")
        if not (math.isfinite(self.min_expected_per_cell) and self.min_expected_per_cell > 0):
            raise ValueError(f"min_expected_per_cell must be > 0, got {self.min_expected_per_cell!r}")


@dataclass(frozen=True, slots=True)
class DriftSettings:
    """Everything ``compare`` and ``SequentialMonitor`` share besides alpha."""

    floors: Floors = field(default_factory=Floors)
    guards: Guards = field(default_factory=Guards)
    metrics: tuple[str, ...] = METRIC_FAMILIES

    def __post_init__(self) -> None:
        unknown = [name for name in self.metrics if name not in METRIC_FAMILIES]
        if unknown or not self.metrics:
            raise ValueError(f"metrics must be a non-empty subset of {list(METRIC_FAMILIES)}, got {list(self.metrics)}")

    def family_alpha(self, alpha: float) -> float:
        """Alpha per tested metric family (Bonferroni across the families)."""
        return alpha / len(self.metrics)


def check_alpha(alpha: float) -> float:
    """``alpha`` when it is a usable error rate, else a ValueError saying what is expected."""
    if not (isinstance(alpha, float | int) and math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be a number in (0, 1), e.g. 0.05; got {alpha!r}")
    return float(alpha)
