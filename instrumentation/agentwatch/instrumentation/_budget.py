"""Budgets: the limits (steps, tool calls, wall time, USD) that stop a run before it runs away.

A ``Budget`` is an immutable description; the run keeps the counters and asks the budget, before
each action, whether that action may start. Checking *before* is the point: with ``max_steps=25``
the 26th step is never started, so an exhausted budget cannot cause one more side effect.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Collection
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

    A ``max_usd`` budget cannot be enforced on a model without a price, so by default an LLM call
    of an unpriced model stops the run with ``max_usd`` before it starts (event reason
    ``unpriced_model``). ``allow_unpriced_models`` (names or shell-style patterns, case-insensitive)
    or ``allow_unpriced=True`` (every model) let such calls run; their cost is then recorded as
    unknown (``agentwatch.cost.unpriced``) and the run's ``cost_usd`` is a lower bound. Without
    ``max_usd`` these two options change nothing.
    """

    max_steps: int | None = None
    max_tool_calls: int | None = None
    max_seconds: float | None = None
    max_usd: float | None = None
    allow_unpriced: bool = False
    allow_unpriced_models: Collection[str] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.allow_unpriced, bool):
            raise ConfigError("budget.allow_unpriced", f"must be true or false, got {self.allow_unpriced!r}")
        models = self.allow_unpriced_models
        if isinstance(models, str | bytes) or not isinstance(models, Collection):
            raise ConfigError("budget.allow_unpriced_models", f"must be a list of model names, got {models!r}")
        normalized: list[str] = []
        for model in models:
            if not isinstance(model, str) or not model.strip():
                raise ConfigError(
                    "budget.allow_unpriced_models", f"model names must be non-empty strings, got {model!r}"
                )
            normalized.append(model.strip().lower())
        object.__setattr__(self, "allow_unpriced_models", tuple(dict.fromkeys(normalized)))
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

    def allows_unpriced(self, model: str) -> bool:
        """True when an LLM call of ``model`` may run without a price under this budget."""
        if self.max_usd is None or self.allow_unpriced:
            return True
        name = model.strip().lower()
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.allow_unpriced_models)

    def check_unpriced(self, model: str, spent_usd: float) -> None:
        """Raise ``BudgetExceeded`` (reason ``unpriced_model``) if ``model`` has no price and may not run unpriced."""
        if self.max_usd is not None and not self.allows_unpriced(model):
            raise BudgetExceeded(
                BudgetName.USD,
                self.max_usd,
                round(spent_usd, 6),
                reason=semconv.BUDGET_REASON_UNPRICED_MODEL,
                model=model,
            )

    def remaining_seconds(self, elapsed_seconds: float) -> float | None:
        """Wall time left, or ``None`` when unlimited (used as a timeout for async tools)."""
        if self.max_seconds is None:
            return None
        return max(0.0, self.max_seconds - elapsed_seconds)
