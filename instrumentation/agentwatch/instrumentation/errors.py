"""Exception hierarchy of the instrumentation, drawn in one place.

::

    AgentWatchError
    ├── ConfigError                 a config file or argument is wrong (names the field)
    └── RunStopped                  control flow: the run must end with ``stop_reason``
        ├── BudgetExceeded          max_steps / max_tool_calls / max_time / max_usd
        ├── ToolDenied              policy_denied (default deny, a deny rule, an unknown tool)
        │   └── UnknownTool         the tool is allowed but nothing implements it
        ├── ApprovalRejected        approval_rejected (rejected, timed out, approver failed)
        ├── KillSwitchEngaged       kill_switch
        └── GuardrailTripped        guardrail (raised by user code or a runtime adapter)

A ``RunStopped`` that leaves an ``agent_run`` block ends the run with its stop reason and is not
re-raised; the caller can also catch it inside the block and carry on.
"""

from __future__ import annotations

from agentwatch.instrumentation.semconv import BUDGET_REASON_UNPRICED_MODEL, BudgetName, StopReason


class AgentWatchError(Exception):
    """Base class of every error agentwatch raises on purpose."""


class ConfigError(AgentWatchError, ValueError):
    """A configuration value is invalid; ``field`` is its dotted path (``budgets.max_steps``)."""

    def __init__(self, field: str, problem: str, *, source: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"{field}: {problem}{where}")


class RunStopped(AgentWatchError):
    """The run must stop; ``stop_reason`` says why."""

    stop_reason: StopReason = StopReason.CANCELLED

    def __init__(self, message: str, *, stop_reason: StopReason | None = None) -> None:
        super().__init__(message)
        if stop_reason is not None:
            self.stop_reason = stop_reason


class BudgetExceeded(RunStopped):
    """A budget would be exceeded by the next action, which therefore did not start.

    ``reason`` is None for a plain exhausted limit; ``"unpriced_model"`` when a ``max_usd`` run
    met an LLM call whose ``model`` has no price (the budget cannot be enforced on it).
    """

    def __init__(
        self,
        budget: BudgetName,
        limit: float,
        used: float,
        *,
        reason: str | None = None,
        model: str | None = None,
    ) -> None:
        self.budget = budget
        self.limit = limit
        self.used = used
        self.reason = reason
        self.model = model
        if reason == BUDGET_REASON_UNPRICED_MODEL:
            message = (
                f"budget {budget.value} cannot be enforced: model {model!r} has no price "
                f"({used:g} used of {limit:g}); the run stops with {budget.stop_reason.value}. Price it "
                "(config pricing: section or configure(price_table=...)) or allow it with "
                "Budget(allow_unpriced_models=[...]) / Budget(allow_unpriced=True)."
            )
        else:
            message = (
                f"budget {budget.value} exhausted: {used:g} used of {limit:g}; the run stops with "
                f"{budget.stop_reason.value}. Raise the limit in Budget(...) if this run needs more."
            )
        super().__init__(message, stop_reason=budget.stop_reason)


class ToolDenied(RunStopped):
    """The gateway refused a tool call; ``rule`` names the policy rule that decided."""

    stop_reason = StopReason.POLICY_DENIED

    def __init__(self, tool: str, rule: str, message: str | None = None) -> None:
        self.tool = tool
        self.rule = rule
        super().__init__(message or _denial_hint(tool, rule))


def _denial_hint(tool: str, rule: str) -> str:
    """The default message of a denial: what to change, which depends on the rule that decided."""
    if rule.startswith("deny:"):
        # deny beats allow, so suggesting allow would send the reader the wrong way
        return (
            f"tool {tool!r} denied by rule {rule!r}: an explicit deny pattern blocks it and nothing overrides "
            "a deny rule; remove or narrow that pattern in Policy(deny=...) if the agent may call it"
        )
    if rule == "default_deny":
        return f"tool {tool!r} denied by rule {rule!r}; add it to Policy(allow=...) if the agent may call it"
    return f"tool {tool!r} denied by rule {rule!r}"


class UnknownTool(ToolDenied):
    """The policy allows the tool but the gateway has no implementation for it."""

    def __init__(self, tool: str, known: list[str]) -> None:
        listing = ", ".join(sorted(known)) or "none"
        super().__init__(
            tool,
            "unknown_tool",
            f"tool {tool!r} is not registered with the gateway (registered: {listing}); "
            "pass it in ToolGateway(tools={...})",
        )


class ApprovalRejected(RunStopped):
    """A tool that needs approval was rejected, the approver timed out, or the approver failed."""

    stop_reason = StopReason.APPROVAL_REJECTED

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"approval for tool {tool!r} not granted: {reason}")


class KillSwitchEngaged(RunStopped):
    """A kill switch covering this run (global, its agent or its tenant) is engaged."""

    stop_reason = StopReason.KILL_SWITCH

    def __init__(self, scope: str, detail: str = "") -> None:
        self.scope = scope
        extra = f" ({detail})" if detail else ""
        super().__init__(f"kill switch engaged for {scope}{extra}; the run was stopped")


class GuardrailTripped(RunStopped):
    """A guardrail refused the input or output; the run stops with ``guardrail``."""

    stop_reason = StopReason.GUARDRAIL
