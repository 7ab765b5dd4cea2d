"""Recording rules: per-agent rates for dashboards, and the ratios and volumes the agent alerts read.

Recording rules follow the ``level:metric:operations`` convention
(``agent:agentwatch_budget_stops:ratio_rate1h``). Their names always carry the *nominal* window,
also when ``RuleOptions.time_scale`` shrinks the windows, so the rules keep their names under test.
The name helpers here are how the alerts refer to them.
"""

from __future__ import annotations

from typing import Final

from agentwatch.alerts.model import Recording
from agentwatch.alerts.options import BUDGET_STOP_REASONS, DAY, HOUR, MINUTE
from agentwatch.alerts.promql import Clock, regex, sum_increase, sum_rate, window_name
from agentwatch.collectors import metric_names
from agentwatch.instrumentation import semconv

_RUNS: Final = metric_names.RUNS_TOTAL
_COST: Final = metric_names.COST_USD_TOTAL
_TOOLS: Final = metric_names.TOOL_CALLS_TOTAL
_AGENT: Final = metric_names.LABEL_AGENT
_TRACK: Final = metric_names.LABEL_TRACK
_STOP: Final = metric_names.LABEL_STOP_REASON
_DISPOSITION: Final = metric_names.LABEL_DISPOSITION


def overview_recordings(clock: Clock) -> tuple[Recording, ...]:
    """Per-agent, per-track rates for dashboards and ad-hoc queries."""
    window, name = clock.window(5 * MINUTE), window_name(5 * MINUTE)
    return (
        Recording(f"agent_track:agentwatch_runs:rate{name}", sum_rate(_RUNS, window, f"{_AGENT}, {_TRACK}")),
        Recording(
            f"agent_track_stop_reason:agentwatch_runs:rate{name}",
            sum_rate(_RUNS, window, f"{_AGENT}, {_TRACK}, {_STOP}"),
        ),
        Recording(f"agent_track:agentwatch_cost_usd:rate{name}", sum_rate(_COST, window, f"{_AGENT}, {_TRACK}")),
        Recording(
            f"agent_track_disposition:agentwatch_tool_calls:rate{name}",
            sum_rate(_TOOLS, window, f"{_AGENT}, {_TRACK}, {_DISPOSITION}"),
        ),
    )


_BURN_WINDOWS: Final = (5 * MINUTE, 30 * MINUTE, HOUR, 6 * HOUR, 3 * DAY)
_BUDGET_VOLUME_WINDOWS: Final = (HOUR, 6 * HOUR, 3 * DAY)


def budget_ratio_name(seconds: int) -> str:
    return f"agent:agentwatch_budget_stops:ratio_rate{window_name(seconds)}"


def runs_increase_name(seconds: int) -> str:
    return f"agent:agentwatch_runs:increase{window_name(seconds)}"


def budget_recordings(clock: Clock) -> tuple[Recording, ...]:
    """Budget-stop error ratios per agent over every burn-rate window, and run volumes."""
    stops = f'{_RUNS}{{{_STOP}=~"{regex(BUDGET_STOP_REASONS)}"}}'
    rules: list[Recording] = []
    for seconds in _BURN_WINDOWS:
        window = clock.window(seconds)
        # an agent without a single budget stop has ratio 0, not no ratio: "or ... * 0" fills it in
        expr = (
            f"(\n    {sum_rate(stops, window)}\n  or\n    {sum_rate(_RUNS, window)} * 0\n)\n"
            f"/\n  {sum_rate(_RUNS, window)}"
        )
        rules.append(Recording(budget_ratio_name(seconds), expr))
    rules.extend(
        Recording(runs_increase_name(seconds), sum_increase(_RUNS, clock.window(seconds)))
        for seconds in _BUDGET_VOLUME_WINDOWS
    )
    return tuple(rules)


SPIKE_WINDOW: Final = 30 * MINUTE
BASELINE_WINDOW: Final = DAY


def share_name(seconds: int) -> str:
    return f"agent_stop_reason:agentwatch_runs:ratio_rate{window_name(seconds)}"


def denied_name(seconds: int) -> str:
    return f"agent:agentwatch_tool_calls_denied:ratio_rate{window_name(seconds)}"


def cost_name(seconds: int) -> str:
    return f"agent:agentwatch_cost_usd:rate{window_name(seconds)}"


TOOL_CALLS_VOLUME: Final = f"agent:agentwatch_tool_calls:increase{window_name(SPIKE_WINDOW)}"


def agent_recordings(clock: Clock) -> tuple[Recording, ...]:
    """Stop-reason and denied tool-call shares now (30 min) and over a day; cost rate and volumes now."""
    denied = f'{_TOOLS}{{{_DISPOSITION}="{semconv.ToolDisposition.DENIED.value}"}}'
    rules: list[Recording] = []
    for seconds in (SPIKE_WINDOW, BASELINE_WINDOW):
        window = clock.window(seconds)
        rules.append(
            Recording(
                share_name(seconds),
                f"  {sum_rate(_RUNS, window, f'{_AGENT}, {_STOP}')}\n"
                f"/ on ({_AGENT}) group_left\n  {sum_rate(_RUNS, window)}",
            )
        )
        rules.append(
            Recording(
                denied_name(seconds),
                f"(\n    {sum_rate(denied, window)}\n  or\n    {sum_rate(_TOOLS, window)} * 0\n)\n"
                f"/\n  {sum_rate(_TOOLS, window)}",
            )
        )
    spike_window = clock.window(SPIKE_WINDOW)
    rules.append(Recording(cost_name(SPIKE_WINDOW), sum_rate(_COST, spike_window)))
    rules.append(Recording(runs_increase_name(SPIKE_WINDOW), sum_increase(_RUNS, spike_window)))
    rules.append(Recording(TOOL_CALLS_VOLUME, sum_increase(_TOOLS, spike_window)))
    return tuple(rules)


__all__ = [
    "BASELINE_WINDOW",
    "SPIKE_WINDOW",
    "TOOL_CALLS_VOLUME",
    "agent_recordings",
    "budget_ratio_name",
    "budget_recordings",
    "cost_name",
    "denied_name",
    "overview_recordings",
    "runs_increase_name",
    "share_name",
]
