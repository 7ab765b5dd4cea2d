"""What the parts of a run need of it: the narrow internal contract between ``AgentRun`` and its users.

The tool gateway, a step, an LLM call and the context variable of the current run depend on these
protocols, never on ``AgentRun`` itself, so ``_run`` (which builds on the gateway and on LLM calls)
sits above them and nothing imports in a circle. ``AgentRun`` implements every protocol here. The
method names are public so that callers need no private member of the run; they are hooks of the
instrumentation, not part of the documented user API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn, Protocol

from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue

from agentwatch.instrumentation._idempotency import IdempotencyLedger
from agentwatch.instrumentation._settings import InstrumentationSettings
from agentwatch.instrumentation.errors import KillSwitchEngaged
from agentwatch.instrumentation.killswitch import KillSwitch
from agentwatch.instrumentation.semconv import ToolDisposition, ToolOutcome


@dataclass(frozen=True, slots=True)
class Usage:
    """Token totals of a run. ``cached_input_tokens`` is the part of ``input_tokens`` served from cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class RunHandle(Protocol):
    """Who the run is and how its spans are made: enough to put a span inside it."""

    @property
    def agent(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def tenant_id(self) -> str | None: ...

    @property
    def settings(self) -> InstrumentationSettings: ...

    @property
    def tracer(self) -> Tracer: ...

    def span_attributes(self) -> dict[str, AttributeValue]:
        """A fresh copy of the attributes every span of the run carries (run id, agent, tenant, track)."""
        ...


class SteppedRun(RunHandle, Protocol):
    """What a step needs: the run's identity, and admission against its budgets."""

    def admit_step(self) -> int:
        """Count a step against the budgets and return its index, or raise ``RunStopped`` first."""
        ...


class MeteredRun(RunHandle, Protocol):
    """What an LLM call needs: the run's identity, and a place to add its usage and cost."""

    def llm_call_started(self, *, model: str, provider: str | None) -> str | None:
        """An LLM call of ``model`` starts: returns its provider (the run's when the call names none);
        the run span takes the model and provider of its first call when it names none itself."""
        ...

    def llm_call_recorded(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
        cost_usd: float | None,
        model: str | None = None,
    ) -> None:
        """Add one finished LLM call to the run's totals (``cost_usd`` None: ``model`` has no price)."""
        ...


class GovernedRun(RunHandle, Protocol):
    """What the tool gateway needs of the run a tool call belongs to."""

    @property
    def kill_switch(self) -> KillSwitch | None: ...

    @property
    def idempotency(self) -> IdempotencyLedger:
        """The run's idempotency keys (a key repeated within the run returns the first result)."""
        ...

    def admit_tool_call(self) -> None:
        """Count a tool call against the budgets, or raise ``RunStopped`` before anything starts."""
        ...

    def remaining_seconds(self) -> float | None:
        """Wall time left in the time budget (None: no time budget)."""
        ...

    def time_exhausted(self) -> NoReturn:
        """An awaited tool outlived the time budget: make it the run's terminal stop and raise it."""
        ...

    def kill_switch_engaged(self, exc: KillSwitchEngaged) -> None:
        """The kill switch stopped one of the run's calls: it becomes the run's terminal stop."""
        ...

    def tool_call_recorded(self, tool: str, disposition: ToolDisposition, outcome: ToolOutcome) -> None:
        """Count a finished tool call under its disposition."""
        ...
