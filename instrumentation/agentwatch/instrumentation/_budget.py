"""Budgets: the limits (steps, tool calls, wall time, USD) that stop a run before it runs away.

A ``Budget`` is an immutable description; the run keeps the counters and asks the budget, before
each action, whether that action may start. Checking *before* is the point: with ``max_steps=25``
the 26th step is never started, so an exhausted budget cannot cause one more side effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation.errors import BudgetExceeded, ConfigError
from agentwatch.instrumentation.semconv import BudgetName

AttributeValue = str | bool | int | float


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one run; ``None`` means unlimited.

    ``max_tool_calls`` counts every call the agent attempts through the gateway, denied ones
    included, so a prompt-injected agent hammering a forbidden tool still runs out of budget.
    ``max_usd`` is checked before each LLM call against the cost recorded so far: the call that
    crosses the limit completes (its price is only known afterwards) and nothing starts after it.
    """

    max_steps: int | None = None
    max_tool_calls: int | None = None
    max_seconds: float | None = None
    max_usd: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_tool_calls"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"budget.{name}", f"must be a positive integer or None, got {value!r}")
        for name in ("max_seconds", "max_usd"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"budget.{name}", f"must be a positive number or None, got {value!r}")

    @property
    def unlimited(self) -> bool:
        """True when no limit is set."""
        return (
            self.max_steps is None and self.max_tool_calls is None and self.max_seconds is None and self.max_usd is None
        )

    def span_attributes(self) -> dict[str, AttributeValue]:
        """The ``agentwatch.budget.*`` attributes of the set limits, for the run span."""
        attributes: dict[str, AttributeValue] = {}
        if self.max_steps is not None:
            attributes[semconv.BUDGET_MAX_STEPS] = self.max_steps
        if self.max_tool_calls is not None:
            attributes[semconv.BUDGET_MAX_TOOL_CALLS] = self.max_tool_calls
        if self.max_seconds is not None:
            attributes[semconv.BUDGET_MAX_SECONDS] = float(self.max_seconds)
        if self.max_usd is not None:
            attributes[semconv.BUDGET_MAX_USD] = float(self.max_usd)
        return attributes

    def check_step(self, steps_done: int) -> None:
        """Raise ``BudgetExceeded`` if one more step would exceed ``max_steps``."""
        if self.max_steps is not None and steps_done >= self.max_steps:
            raise BudgetExceeded(BudgetName.STEPS, self.max_steps, steps_done)

    def check_tool_call(self, calls_done: int) -> None:
        """Raise ``BudgetExceeded`` if one more tool call would exceed ``max_tool_calls``."""
        if self.max_tool_calls is not None and calls_done >= self.max_tool_calls:
            raise BudgetExceeded(BudgetName.TOOL_CALLS, self.max_tool_calls, calls_done)

    def check_time(self, elapsed_seconds: float) -> None:
        """Raise ``BudgetExceeded`` if the wall-time budget is used up."""
        if self.max_seconds is not None and elapsed_seconds >= self.max_seconds:
            raise BudgetExceeded(BudgetName.SECONDS, self.max_seconds, round(elapsed_seconds, 6))

    def check_usd(self, spent_usd: float) -> None:
        """Raise ``BudgetExceeded`` if the USD budget is used up."""
        if self.max_usd is not None and spent_usd >= self.max_usd:
            raise BudgetExceeded(BudgetName.USD, self.max_usd, round(spent_usd, 6))

    def remaining_seconds(self, elapsed_seconds: float) -> float | None:
        """Wall time left, or ``None`` when unlimited (used as a timeout for async tools)."""
        if self.max_seconds is None:
            return None
        return max(0.0, self.max_seconds - elapsed_seconds)
