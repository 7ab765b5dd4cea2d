"""PromQL and duration helpers the rule builders share: numbers, windows, aggregations.

Every string these return lands verbatim in the committed rule file, so they format numbers and
durations without float noise, and indent multi-line expressions as the file shows them.
"""

from __future__ import annotations

from typing import Final

from agentwatch.alerts.options import DAY, HOUR, MINUTE, RuleOptions
from agentwatch.collectors import metric_names

_AGENT: Final = metric_names.LABEL_AGENT


def duration(seconds: int) -> str:
    """A Prometheus duration with the largest units first: 3d, 6h, 1h30m, 15s (0s for zero)."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def num(value: float) -> str:
    """A PromQL number without float noise: 14.4 * 0.01 renders as 0.144, 20.0 as 20."""
    return f"{value:.10g}"


def percent(value: float) -> str:
    return f"{value * 100:.4g}%"


def points(value: float) -> str:
    """A difference of two shares in percentage points (0.01 is "1 pp")."""
    return f"{value * 100:.4g} pp"


def regex(values: tuple[str, ...]) -> str:
    return "|".join(values)


class Clock:
    """Turns nominal durations into the (possibly scaled) durations written into the rules."""

    def __init__(self, options: RuleOptions) -> None:
        self._scale = options.time_scale
        self._min_window = options.min_window_seconds

    def window(self, nominal_seconds: int) -> str:
        """A range window or offset: scaled, whole seconds, never below the minimum window."""
        return duration(max(self._min_window, round(nominal_seconds * self._scale)))

    def hold(self, nominal_seconds: int) -> str:
        """A ``for:`` duration: scaled, whole seconds, at least 1 s unless nominally zero."""
        if nominal_seconds <= 0:
            return "0s"
        return duration(max(1, round(nominal_seconds * self._scale)))


def window_name(seconds: int) -> str:
    """The nominal window as it appears in recording-rule names (rate5m, ratio_rate3d)."""
    return duration(seconds)


def sum_rate(selector: str, window: str, by: str = _AGENT) -> str:
    return f"sum by ({by}) (rate({selector}[{window}]))"


def sum_increase(selector: str, window: str, by: str = _AGENT) -> str:
    return f"sum by ({by}) (increase({selector}[{window}]))"


def counted_events(selector: str, window: str) -> tuple[str, str]:
    """Events of a counter in the window per series, including a series born inside the window.

    Returns two operands for an ``or``. ``increase()`` needs two samples, so the first increment
    of a labelled counter (its series appears at 1) is invisible to it. A series that exists now
    but did not exist ``window`` ago was created inside the window (the collector creates a
    labelled series on its first increment), so its whole value counts; listed first, it wins over
    ``increase()`` for that series. The ``up offset`` guard keeps a fresh Prometheus, which has no
    history at all, from taking every old series for a new one.
    """
    born = (
        f"(\n    ({selector} unless {selector} offset {window})\n  and on (job, instance)\n    (up offset {window})\n)"
    )
    return born, f"increase({selector}[{window}])"


def union(operands: tuple[str, ...]) -> str:
    """Operands joined by ``or``, one level of indentation inside an enclosing aggregation."""
    return "\n  or\n".join(indent(operand, 4) for operand in operands)


def indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


__all__ = [
    "Clock",
    "counted_events",
    "duration",
    "indent",
    "num",
    "percent",
    "points",
    "regex",
    "sum_increase",
    "sum_rate",
    "union",
    "window_name",
]
