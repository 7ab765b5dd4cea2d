"""The knobs of the rules (``RuleOptions``) and the names and units they share.

``time_scale`` multiplies every range window, offset, recording window and ``for:`` duration, so an
end-to-end test can run the very same rules a hundred times faster. Scaled durations are rounded
to whole seconds; range windows and offsets are clamped to at least ``min_window_seconds``
(default 5 s), because a rate needs several scrapes in its window: at a 1 s scrape interval, 5 s
keeps about five samples. A non-zero ``for:`` never scales below 1 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Final

from agentwatch.collectors import metric_names
from agentwatch.instrumentation import semconv

COLLECTOR_JOB: Final = "agentwatch-collector"

PAGE: Final = "page"
TICKET: Final = "ticket"
COMPONENT_AGENT: Final = "agent"
COMPONENT_CANARY: Final = "canary"
COMPONENT_COLLECTOR: Final = "collector"

BUDGET_STOP_REASONS: Final = tuple(budget.stop_reason.value for budget in semconv.BudgetName)
"""The stop reasons that spend the error budget of the budget SLO (max_steps, max_tool_calls, max_time, max_usd)."""

SLO_PERIOD_DAYS: Final = 30
"""The SLO period behind the burn-rate factors (14.4x for 1 h spends 2 % of a 30-day budget)."""

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86_400


@dataclass(frozen=True)
class RuleOptions:
    """Thresholds and windows of the rules; the defaults are what ``alerts/`` holds."""

    budget_slo: float = 0.99
    """Target fraction of runs that do not end on a budget stop (max_steps, max_tool_calls, max_time, max_usd)."""
    time_scale: float = 1.0
    """Multiplies every window, offset and ``for:`` (1/120 turns an hour into 30 s for end-to-end tests)."""
    min_window_seconds: int = 5
    """Scaled range windows and offsets never go below this (a rate needs several scrapes per window)."""

    budget_min_runs: float = 20
    """Runs an agent needs in the long window of a burn-rate alert, so one unlucky run never pages."""

    spike_stop_reasons: tuple[str, ...] = (
        semconv.StopReason.ERROR.value,
        semconv.StopReason.GUARDRAIL.value,
        semconv.StopReason.POLICY_DENIED.value,
    )
    """Stop reasons whose share AgentStopReasonSpike watches (one alert per agent and reason)."""
    spike_min_share: float = 0.1
    """A stop reason spikes only above this share of the agent's runs (30 min) ..."""
    spike_baseline_factor: float = 3.0
    """... and above this multiple of its share over the day before."""
    spike_min_runs: float = 20
    """Runs an agent needs in the 30-minute window before a share can spike."""

    denial_min_share: float = 0.2
    """Tool-call denials spike above this share of the agent's tool calls (30 min) ..."""
    denial_baseline_factor: float = 3.0
    """... and above this multiple of the denied share over the day before."""
    denial_min_calls: float = 20
    """Tool calls an agent needs in the 30-minute window before its denied share can spike."""
    denial_surge_factor: float = 10.0
    """AgentToolDenialSurge: the denied share (30 min) rose above this multiple of the day before ..."""
    denial_surge_floor: float = 0.002
    """... where a day-before share under this counts as this (a rise from nothing needs a real share) ..."""
    denial_surge_min_denied: float = 10
    """... with at least this many denied calls in the window, while denials stay under denial_min_share."""

    cost_usd_per_hour: float = 10.0
    """Hard ceiling: an agent spending more than this (30 min average) pages."""
    cost_baseline_factor: float = 3.0
    """An agent spending this multiple of its own average rate over the previous day pages too ..."""
    cost_baseline_min_usd_per_hour: float = 1.0
    """... once it spends at least this much (small agents doubling pennies page nobody)."""

    vanished_min_runs: float = 20
    """An agent with at least this many runs in the hour before the quiet window counts as having had traffic."""

    canary_suspect_evalue: float = 5.0
    """An e-value above this raises a ticket (1/alpha, 20 at alpha 0.05, is decisive evidence of drift)."""
    canary_z_critical: float = 3.0
    """One-sided critical value of the PromQL two-proportion z-test on stop reasons."""
    canary_min_runs: float = 30
    """Runs each arm (canary and baseline/stable) needs in the window before the z-test may page."""
    canary_min_ratio: float = 1.5
    """Practical floor: the canary's share must be at least this multiple of the baseline's ..."""
    canary_min_difference: float = 0.01
    """... and at least this much higher in absolute terms (0.01 = one percentage point)."""
    canary_bad_stop_reasons: tuple[str, ...] = (
        semconv.StopReason.MAX_STEPS.value,
        semconv.StopReason.MAX_TOOL_CALLS.value,
        semconv.StopReason.MAX_TIME.value,
        semconv.StopReason.MAX_USD.value,
        semconv.StopReason.POLICY_DENIED.value,
        semconv.StopReason.APPROVAL_REJECTED.value,
        semconv.StopReason.GUARDRAIL.value,
        semconv.StopReason.ERROR.value,
        metric_names.OTHER,
    )
    """Stop reasons a canary must not make more frequent (not completed, cancelled or kill_switch,
    which users and operators cause, not the release)."""

    collector_reject_share: float = 0.05
    """Share of received spans refused (per reason, 10 minutes) that opens a ticket ..."""
    collector_reject_min_spans: float = 100
    """... once the collector received at least this many spans in the window."""
    spool_fill_ratio: float = 0.8
    """Fraction of the spool's capacity in use that opens a ticket."""
    collector_job: str = COLLECTOR_JOB
    """Prometheus job name of the collector's scrape."""

    def __post_init__(self) -> None:
        if not 0.0 < self.budget_slo < 1.0:
            raise ValueError(f"budget_slo must be between 0 and 1 (exclusive), got {self.budget_slo}")
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, got {self.time_scale}")
        if self.min_window_seconds < 1:
            raise ValueError(f"min_window_seconds must be at least 1, got {self.min_window_seconds}")
        for option in fields(self):
            value = getattr(self, option.name)
            if isinstance(value, float | int) and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{option.name} must be a finite non-negative number, got {value}")
        for reasons in (self.spike_stop_reasons, self.canary_bad_stop_reasons):
            if not reasons:
                raise ValueError("stop-reason lists must not be empty")


DEFAULT_OPTIONS: Final = RuleOptions()
"""The options the committed files are rendered with."""


__all__ = [
    "BUDGET_STOP_REASONS",
    "COLLECTOR_JOB",
    "COMPONENT_AGENT",
    "COMPONENT_CANARY",
    "COMPONENT_COLLECTOR",
    "DAY",
    "DEFAULT_OPTIONS",
    "HOUR",
    "MINUTE",
    "PAGE",
    "SLO_PERIOD_DAYS",
    "TICKET",
    "RuleOptions",
]
