"""Canary rules: the PromQL two-proportion z-test on stop reasons, and the canary alerts.

The drift analyzer of the collector publishes a verdict and an e-value per agent and metric
(CanaryDriftDetected, CanaryDriftSuspected); CanaryStopReasonDrift cross-checks the stop-reason
mix from the run counters alone, so a canary still pages while the analyzer is down.
"""

from __future__ import annotations

from typing import Final

from agentwatch.alerts.model import SILENCE_AGENT, Alert, Recording, Runbook
from agentwatch.alerts.options import COMPONENT_CANARY, HOUR, MINUTE, PAGE, TICKET, RuleOptions
from agentwatch.alerts.promql import Clock, num, points, regex, sum_increase, window_name
from agentwatch.collectors.metric_names import (
    CANARY_DRIFT_EVALUE,
    CANARY_VERDICT,
    LABEL_AGENT,
    LABEL_METRIC,
    LABEL_STOP_REASON,
    LABEL_TRACK,
    RUNS_TOTAL,
    VERDICT_FAIL,
    VERDICT_PASS,
)
from agentwatch.instrumentation import semconv

_RUNS: Final = RUNS_TOTAL
_AGENT: Final = LABEL_AGENT
_TRACK: Final = LABEL_TRACK
_STOP: Final = LABEL_STOP_REASON

_CANARY_WINDOW: Final = HOUR
_CW: Final = window_name(_CANARY_WINDOW)
_ARM_TOTALS: Final = f"agent_track:agentwatch_runs:increase{_CW}"
_ARM_REASONS: Final = f"agent_track_stop_reason:agentwatch_runs:increase{_CW}"
_REFERENCE_ARM: Final = f"agent_track:agentwatch_runs_reference:increase{_CW}"
_CANARY_N: Final = f"agent:agentwatch_canary_runs:increase{_CW}"
_REFERENCE_N: Final = f"agent:agentwatch_reference_runs:increase{_CW}"
_CANARY_X: Final = f"agent_stop_reason:agentwatch_canary_runs:increase{_CW}"
_REFERENCE_X: Final = f"agent_stop_reason:agentwatch_reference_runs:increase{_CW}"
_CANARY_P: Final = f"agent_stop_reason:agentwatch_canary_runs:ratio_increase{_CW}"
_REFERENCE_P: Final = f"agent_stop_reason:agentwatch_reference_runs:ratio_increase{_CW}"
_POOLED_P: Final = f"agent_stop_reason:agentwatch_pooled_runs:ratio_increase{_CW}"
_Z_SCORE: Final = f"agent_stop_reason:agentwatch_canary_runs:zscore_increase{_CW}"


def canary_recordings(options: RuleOptions, clock: Clock) -> tuple[Recording, ...]:
    """The two-proportion z-test of canary vs reference stop-reason shares, one step per rule.

    The rules of one group run in order, so each step reads the previous one of the same cycle.
    The reference arm is the baseline track where it ran in the window, else stable; its series
    keep their ``track`` label, so the chosen arm stays visible.
    """
    window = clock.window(_CANARY_WINDOW)
    bad = regex(options.canary_bad_stop_reasons)
    canary = semconv.Track.CANARY.value
    return (
        Recording(_ARM_TOTALS, sum_increase(_RUNS, window, f"{_AGENT}, {_TRACK}")),
        Recording(_ARM_REASONS, sum_increase(_RUNS, window, f"{_AGENT}, {_TRACK}, {_STOP}")),
        Recording(
            _REFERENCE_ARM,
            f'  {_ARM_TOTALS}{{{_TRACK}="{semconv.Track.BASELINE.value}"}} > 0\n'
            f"or on ({_AGENT})\n"
            f'  {_ARM_TOTALS}{{{_TRACK}="{semconv.Track.STABLE.value}"}}',
        ),
        Recording(_CANARY_N, f'sum by ({_AGENT}) ({_ARM_TOTALS}{{{_TRACK}="{canary}"}})'),
        Recording(_REFERENCE_N, f"sum by ({_AGENT}) ({_REFERENCE_ARM})"),
        Recording(_CANARY_X, f'sum by ({_AGENT}, {_STOP}) ({_ARM_REASONS}{{{_TRACK}="{canary}", {_STOP}=~"{bad}"}})'),
        # a stop reason the reference arm never had is a share of 0 there, not a missing comparison:
        # a canary that introduces a new failure is exactly the case to catch
        Recording(
            _REFERENCE_X,
            f"  sum by ({_AGENT}, {_STOP}) (\n"
            f'      {_ARM_REASONS}{{{_STOP}=~"{bad}"}}\n'
            f"    and on ({_AGENT}, {_TRACK})\n"
            f"      {_REFERENCE_ARM}\n"
            f"  )\n"
            f"or\n"
            f"  {_CANARY_X} * 0",
        ),
        Recording(_CANARY_P, f"{_CANARY_X}\n/ on ({_AGENT}) group_left\n{_CANARY_N}"),
        Recording(_REFERENCE_P, f"{_REFERENCE_X}\n/ on ({_AGENT}) group_left\n{_REFERENCE_N}"),
        Recording(
            _POOLED_P,
            # group_left needs its (empty) label list spelled out when a parenthesis follows
            f"  ({_CANARY_X} + {_REFERENCE_X})\n/ on ({_AGENT}) group_left ()\n  ({_CANARY_N} + {_REFERENCE_N})",
        ),
        # z = (p_canary - p_reference) / sqrt(p (1 - p) (1/n_canary + 1/n_reference)), p pooled
        Recording(
            _Z_SCORE,
            f"  ({_CANARY_P} - {_REFERENCE_P})\n"
            f"/\n"
            f"  sqrt(\n"
            f"      {_POOLED_P} * (1 - {_POOLED_P})\n"
            f"    * on ({_AGENT}) group_left ()\n"
            f"      (1 / {_CANARY_N} + 1 / {_REFERENCE_N})\n"
            f"  )",
        ),
    )


def canary_alerts(options: RuleOptions, clock: Clock) -> tuple[Alert, ...]:
    window = clock.window(_CANARY_WINDOW)
    canary_checks = (
        "Open the canary dashboard for the agent: which metric (stop-reason mix, cost, steps, duration) "
        "drifted, in which direction and by how much?",
        "Run `agentwatch drift` for the full report: per-metric effect, interval and evidence.",
        "Compare a few canary and baseline runs with `agentwatch runs --agent <agent> --track canary` and "
        "`agentwatch trace RUN_ID`.",
    )
    detected = Alert(
        name="CanaryDriftDetected",
        expr=f"max by ({_AGENT}, {LABEL_METRIC}) ({CANARY_VERDICT}) == {VERDICT_FAIL}",
        hold_seconds=MINUTE,
        severity=PAGE,
        component=COMPONENT_CANARY,
        summary="Canary of agent {{ $labels.agent }} drifted on {{ $labels.metric }}",
        description=(
            "The drift analyzer failed the canary of agent {{ $labels.agent }}: its {{ $labels.metric }} differs "
            "from the baseline beyond the practical floor, with anytime-valid evidence."
        ),
        runbook=Runbook(
            meaning=(
                f"The collector's drift analyzer compares the canary with the baseline (or stable) track from "
                f"`agent_runs` and publishes `{CANARY_VERDICT}` per agent and metric (0 pass, "
                f"1 inconclusive, 2 fail). A verdict of 2 means the canary differs on that metric by more than "
                f"the practical-significance floor, with evidence from an anytime-valid test (looking every "
                f"minute does not inflate false alarms) after multiple-testing correction: the release changed "
                f"the agent's behaviour."
            ),
            checks=(
                *canary_checks,
                "Halt the rollout and roll the canary back unless the change is intended; if it is (a new "
                "model that is meant to be cheaper), record that and restart the comparison.",
            ),
            dashboard="agentwatch-canary",
            silence=f"{SILENCE_AGENT} metric=stop_reason",
        ),
    )
    suspected = Alert(
        name="CanaryDriftSuspected",
        # A passing metric can carry a huge e-value: a real change below the practical floor
        # (one more tool call in fifty runs) is certain yet harmless, and must not open tickets.
        expr=(
            f"max by ({_AGENT}, {LABEL_METRIC}) ({CANARY_DRIFT_EVALUE}) "
            f"> {num(options.canary_suspect_evalue)}\n"
            f"unless on ({_AGENT}, {LABEL_METRIC}) "
            f"max by ({_AGENT}, {LABEL_METRIC}) ({CANARY_VERDICT}) == {VERDICT_PASS}"
        ),
        hold_seconds=15 * MINUTE,
        severity=TICKET,
        component=COMPONENT_CANARY,
        summary="Canary of agent {{ $labels.agent }} may be drifting on {{ $labels.metric }}",
        description=(
            f"The drift e-value of the canary of agent {{{{ $labels.agent }}}} on {{{{ $labels.metric }}}} is "
            f'{{{{ $value | printf "%.1f" }}}} (above {num(options.canary_suspect_evalue)}; 1/alpha, 20 at '
            f"alpha 0.05, is decisive)."
        ),
        runbook=Runbook(
            meaning=(
                f'`{CANARY_DRIFT_EVALUE}` is the anytime-valid evidence against "the canary behaves '
                f'like the baseline": it can be read at any time, and 1/alpha (20 for alpha 0.05, before any '
                f"multiple-testing correction) is the rejection level. Above "
                f"{num(options.canary_suspect_evalue)} the evidence is building but not decisive: more canary "
                f"traffic will confirm (CanaryDriftDetected pages) or dissolve it. A metric whose verdict is "
                f"already pass (a real change below the practical floor) does not open this ticket. "
                f"Alertmanager suppresses this ticket while CanaryDriftDetected fires for the same agent."
            ),
            checks=(
                *canary_checks,
                "Do not promote the canary while this fires; give it more traffic or time instead.",
            ),
            dashboard="agentwatch-canary",
            silence=f"{SILENCE_AGENT} metric=cost_usd",
        ),
    )
    stop_drift = Alert(
        name="CanaryStopReasonDrift",
        expr=(
            f"    {_Z_SCORE} > {num(options.canary_z_critical)}\n"
            f"  and on ({_AGENT})\n"
            f"    {_CANARY_N} >= {num(options.canary_min_runs)}\n"
            f"  and on ({_AGENT})\n"
            f"    {_REFERENCE_N} >= {num(options.canary_min_runs)}\n"
            f"  and\n"
            f"    {_CANARY_P} >= {num(options.canary_min_ratio)} * {_REFERENCE_P}\n"
            f"  and\n"
            f"    {_CANARY_P} - {_REFERENCE_P} >= {num(options.canary_min_difference)}"
        ),
        hold_seconds=5 * MINUTE,
        severity=PAGE,
        component=COMPONENT_CANARY,
        summary="Canary of agent {{ $labels.agent }} ends more runs on {{ $labels.stop_reason }}",
        description=(
            f"Over the last {window}, the canary of agent {{{{ $labels.agent }}}} ended a larger share of its "
            f"runs on {{{{ $labels.stop_reason }}}} than the baseline (or stable) track: two-proportion "
            f'z = {{{{ $value | printf "%.2f" }}}} (critical value {num(options.canary_z_critical)}), at '
            f"least {num(options.canary_min_ratio)}x and {points(options.canary_min_difference)} above the "
            f"baseline's share."
        ),
        runbook=Runbook(
            meaning=(
                f"A PromQL-only cross-check of the drift analyzer, straight from `{_RUNS}`: per agent and bad "
                f"stop reason ({', '.join(options.canary_bad_stop_reasons)}), the share of canary runs over the "
                f"last {window} is compared with the reference arm (the `baseline` track when it ran in the "
                f"window, else `stable`) by a one-sided two-proportion z-test with pooled proportion, "
                f"z = (p_canary - p_ref) / sqrt(p (1 - p) (1/n_canary + 1/n_ref)). It fires when z is above "
                f"{num(options.canary_z_critical)}, each arm has at least {num(options.canary_min_runs)} runs, "
                f"and the difference matters in practice: the canary's share is at least "
                f"{num(options.canary_min_ratio)} times and {points(options.canary_min_difference)} above "
                f"the reference share. Unlike the analyzer's test it is not anytime-valid (it is re-evaluated "
                f"every cycle); the strict critical value, the volume floor and the `for:` duration make up for that."
            ),
            checks=(
                *canary_checks,
                "The recording rules `agent_stop_reason:agentwatch_canary_runs:ratio_increase1h` and "
                "`agent_stop_reason:agentwatch_reference_runs:ratio_increase1h` hold the two shares; "
                "`agent_track:agentwatch_runs_reference:increase1h` shows which track served as reference.",
                "Halt the rollout and roll the canary back.",
            ),
            dashboard="agentwatch-canary",
            silence=f"{SILENCE_AGENT} stop_reason=max_steps",
        ),
    )
    return detected, suspected, stop_drift


__all__ = ["canary_alerts", "canary_recordings"]
