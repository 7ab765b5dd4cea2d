"""``agent_run``: one agent run as a span tree with budgets, a gateway and a guaranteed stop reason.

The run owns its counters (steps, tool calls, LLM calls, tokens, cost) and checks budgets and the
kill switch *before* each action. A ``RunStopped`` (budget, denial, rejection, kill switch,
guardrail) that leaves the block ends the run with its stop reason and is swallowed; any other
exception ends it with ``error`` and propagates unchanged; cancellation ends it with
``cancelled``. Exhausted budgets and an engaged kill switch are terminal: once raised, the run's
stop reason is fixed even if the caller catches the exception. Denials are not: a caller that
catches ``ToolDenied`` carries on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._budget import Budget
from agentwatch.instrumentation._context import current_run, current_step
from agentwatch.instrumentation._gateway import ToolGateway
from agentwatch.instrumentation._guard import end_span, error_description, start_span
from agentwatch.instrumentation._idempotency import IdempotencyLedger
from agentwatch.instrumentation._installed import current_settings, current_tracer_provider, tracer_for
from agentwatch.instrumentation._llm import LLMCall, warn_unpriced
from agentwatch.instrumentation._runapi import GovernedRun, Usage
from agentwatch.instrumentation._settings import InstrumentationSettings
from agentwatch.instrumentation._step import StepScope
from agentwatch.instrumentation.errors import BudgetExceeded, KillSwitchEngaged, RunStopped
from agentwatch.instrumentation.killswitch import KillSwitch, KillSwitchSource
from agentwatch.instrumentation.semconv import BudgetName, StopReason, ToolDisposition, ToolOutcome, Track

if TYPE_CHECKING:
    from contextvars import Token

audit_logger: Final = logging.getLogger("agentwatch.audit")

_TRACKS: Final = frozenset(t.value for t in Track)
_Used = TypeVar("_Used", int, float)


class AgentRun:
    """A live run; get one from ``agent_run(...)``. Thread- and task-safe counters.

    It implements the internal protocols of ``_runapi`` (``GovernedRun`` for the tool gateway,
    ``MeteredRun`` for LLM calls): the methods under "hooks" below are for those and for the
    runtime integrations, not for agent code.
    """

    def __init__(
        self,
        agent: str,
        *,
        tenant_id: str | None,
        version: str | None,
        track: str,
        budget: Budget,
        gateway: ToolGateway | None,
        runtime: str,
        conversation_id: str | None,
        kill_switch: KillSwitch | None,
        tracer: Tracer,
        settings: InstrumentationSettings,
    ) -> None:
        self.agent = agent
        self.tenant_id = tenant_id
        self.version = version
        self.track = track
        self.budget = budget
        self.gateway = gateway
        self.runtime = runtime
        self.conversation_id = conversation_id
        self.provider: str | None = None  # gen_ai.provider.name of the run span, the default of its LLM calls
        self.model: str | None = None  # gen_ai.request.model of the run span
        self.kill_switch = kill_switch
        self.tracer = tracer
        self.settings = settings
        self.run_id: str = settings.id_generator()
        self.parent_run_id: str | None = None
        self._lock = threading.RLock()  # re-entered when a budget check records its event
        self._stop_reason: StopReason | None = None
        self._terminal: RunStopped | None = None
        self._exhausted: BudgetName | None = None
        self._steps = 0
        self._tool_calls = 0
        self._llm_calls = 0
        self._unpriced_llm_calls = 0
        self._input_tokens = 0
        self._output_tokens = 0
        self._cached_input_tokens = 0
        self._cost_usd = 0.0
        self._started_at = 0.0
        self._idempotency = IdempotencyLedger()
        self._tool_dispositions: dict[str, int] = {}
        self._base_attributes: dict[str, AttributeValue] = {
            semconv.RUN_ID: self.run_id,
            semconv.GEN_AI_AGENT_NAME: agent,
        }
        if tenant_id is not None:
            self._base_attributes[semconv.TENANT_ID] = tenant_id
        self._base_attributes[semconv.TRACK] = track
        self.span: Span = trace.INVALID_SPAN

    # -- read-only state ------------------------------------------------------------------------

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the run ended; always set once the ``agent_run`` block has exited."""
        return self._stop_reason

    @property
    def stopped(self) -> bool:
        """True once the run has a stop reason or a terminal condition (budget, kill switch)."""
        return self._stop_reason is not None or self._terminal is not None

    @property
    def usage(self) -> Usage:
        with self._lock:
            return Usage(self._input_tokens, self._output_tokens, self._cached_input_tokens)

    @property
    def cost_usd(self) -> float:
        """Cost of the priced LLM calls so far (see ``unpriced_llm_calls``)."""
        return self._cost_usd

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def tool_calls(self) -> int:
        return self._tool_calls

    @property
    def llm_calls(self) -> int:
        return self._llm_calls

    @property
    def unpriced_llm_calls(self) -> int:
        """LLM calls whose model has no price: the cost is a lower bound while this is non-zero."""
        return self._unpriced_llm_calls

    @property
    def exhausted_budget(self) -> BudgetName | None:
        return self._exhausted

    @property
    def tool_dispositions(self) -> Mapping[str, int]:
        """Count of tool calls per gateway disposition."""
        with self._lock:
            return dict(self._tool_dispositions)

    def elapsed_seconds(self) -> float:
        return self.settings.clock() - self._started_at

    # -- actions --------------------------------------------------------------------------------

    def step(self) -> StepScope:
        """Context manager (sync or async) for one step; refused before it starts when over budget."""
        return StepScope(self)

    def llm_call(
        self,
        *,
        model: str,
        provider: str | None = None,
        operation: str = semconv.OP_CHAT,
        input_messages: Sequence[Any] | None = None,
    ) -> LLMCall:
        """Context manager for one LLM call; set usage on it, the cost is computed at exit."""
        self._admit_llm_call(model)
        return LLMCall(self, model=model, provider=provider, operation=operation, input_messages=input_messages)

    def record_llm_call(
        self,
        *,
        model: str,
        provider: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        response_model: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        response_id: str | None = None,
        input_messages: Sequence[Any] | None = None,
        output_messages: Sequence[Any] | None = None,
        cost_usd: float | None = None,
        operation: str = semconv.OP_CHAT,
        start_time_ns: int | None = None,
        end_time_ns: int | None = None,
    ) -> LLMCall:
        """Record an LLM call that already happened (one span, usage and cost added to the run)."""
        # A call with a billed cost is priced whatever its model; else either model name may price it.
        self._admit_llm_call(*(() if cost_usd is not None else (model, *((response_model,) if response_model else ()))))
        call = LLMCall(self, model=model, provider=provider, operation=operation, input_messages=input_messages)
        call.start(start_time_ns=start_time_ns)
        call.set_usage(input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached_input_tokens)
        call.set_response(
            model=response_model,
            finish_reasons=finish_reasons,
            response_id=response_id,
            output_messages=output_messages,
        )
        if cost_usd is not None:
            call.set_cost(cost_usd)
        call.finish(end_time_ns=end_time_ns)
        return call

    def call_tool(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        call_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call a tool through the run's gateway."""
        return self._require_gateway().call(name, args, run=self, call_id=call_id, idempotency_key=idempotency_key)

    async def acall_tool(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        call_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Call a tool (sync or async) through the run's gateway from async code."""
        return await self._require_gateway().acall(
            name, args, run=self, call_id=call_id, idempotency_key=idempotency_key
        )

    def stop(self, reason: StopReason | str) -> None:
        """End the run with ``reason`` (the first reason wins); later actions raise ``RunStopped``."""
        stop_reason = StopReason(reason)
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = stop_reason

    def record_input(self, value: Any) -> None:
        """Record the run's input (only when content capture is on; redacted and truncated)."""
        if self.settings.capture_content:
            self.span.set_attribute(semconv.RUN_INPUT, self.settings.redactor.to_attribute(value))

    def record_output(self, value: Any) -> None:
        """Record the run's final output (only when content capture is on; redacted and truncated)."""
        if self.settings.capture_content:
            self.span.set_attribute(semconv.RUN_OUTPUT, self.settings.redactor.to_attribute(value))

    def check(self) -> None:
        """Raise ``RunStopped`` now if the run must stop (time budget, kill switch, explicit stop)."""
        self._ensure_running()
        self._check_kill_switch()
        self._check_time()

    # -- admission (called before each action) -------------------------------------------------

    def _require_gateway(self) -> ToolGateway:
        if self.gateway is None:
            raise TypeError("this run has no tool gateway: pass agent_run(..., gateway=ToolGateway(...))")
        return self.gateway

    def _ensure_running(self) -> None:
        if self._terminal is not None:
            raise self._terminal
        if self._stop_reason is not None:
            raise RunStopped(f"run already stopped ({self._stop_reason.value})", stop_reason=self._stop_reason)

    def _check_kill_switch(self) -> None:
        if self.kill_switch is None:
            return
        state = self.kill_switch.check(agent=self.agent, tenant_id=self.tenant_id)
        if state.engaged:
            error = KillSwitchEngaged(state.scope or "*", f"source {state.source}")
            self.kill_switch_engaged(error)
            raise error

    def _enforce(self, check: Callable[[_Used], None], used: _Used) -> None:
        """Run one budget check; an exhausted budget becomes the run's terminal condition."""
        try:
            check(used)
        except BudgetExceeded as exc:
            self._budget_exceeded(exc)
            raise

    def _check_time(self) -> None:
        if self.budget.max_seconds is not None:
            self._enforce(self.budget.check_time, self.elapsed_seconds())

    def _admit_llm_call(self, *models: str) -> None:
        """Admit an LLM call; with ``max_usd``, refuse it if none of ``models`` (if given) has a price."""
        self._ensure_running()
        self._check_kill_switch()
        self._check_time()
        self._enforce(self.budget.check_usd, self._cost_usd)
        if models and self.budget.max_usd is not None and all(self.settings.prices().lookup(m) is None for m in models):
            warn_unpriced(models[0])
            self._enforce(lambda spent: self.budget.check_unpriced(models[0], spent), self._cost_usd)

    # -- terminal conditions ----------------------------------------------------------------------

    def _make_terminal(self, exc: RunStopped) -> bool:
        """Fix the run's terminal condition; True for the first one (later ones change nothing)."""
        with self._lock:
            if self._terminal is not None:
                return False
            self._terminal = exc
            if isinstance(exc, BudgetExceeded):
                self._exhausted = exc.budget
            return True

    def _budget_exceeded(self, exc: BudgetExceeded) -> None:
        if self._make_terminal(exc):
            attributes: dict[str, AttributeValue] = {
                semconv.EVENT_ATTR_BUDGET: exc.budget.value,
                semconv.EVENT_ATTR_LIMIT: float(exc.limit),
                semconv.EVENT_ATTR_USED: float(exc.used),
            }
            if exc.reason is not None:
                attributes[semconv.EVENT_ATTR_REASON] = exc.reason
            if exc.model is not None:
                attributes[semconv.EVENT_ATTR_MODEL] = exc.model
            self.span.add_event(semconv.EVENT_BUDGET_EXHAUSTED, attributes)

    # -- hooks: the _runapi protocols (the gateway, LLM calls, runtime integrations) ---------------

    def span_attributes(self) -> dict[str, AttributeValue]:
        """A fresh copy of the attributes every span of the run carries (run id, agent, tenant, track)."""
        return dict(self._base_attributes)

    @property
    def idempotency(self) -> IdempotencyLedger:
        """The run's idempotency keys: a key repeated within the run returns the first result."""
        return self._idempotency

    def admit_step(self) -> int:
        """Count a step against the budgets and return its index, or raise ``RunStopped`` first."""
        self._ensure_running()
        self._check_kill_switch()
        self._check_time()
        with self._lock:
            self._enforce(self.budget.check_step, self._steps)
            self._steps += 1
            return self._steps

    def admit_tool_call(self) -> None:
        """Count a tool call against the budgets, or raise ``RunStopped`` before anything starts."""
        self._ensure_running()
        self._check_time()
        with self._lock:
            self._enforce(self.budget.check_tool_call, self._tool_calls)
            self._tool_calls += 1

    def remaining_seconds(self) -> float | None:
        """Wall time left in the time budget (None: no time budget)."""
        return self.budget.remaining_seconds(self.elapsed_seconds())

    def time_exhausted(self) -> NoReturn:
        """An awaited tool outlived the wall-time budget: the run's terminal stop, raised."""
        assert self.budget.max_seconds is not None
        exc = BudgetExceeded(BudgetName.SECONDS, self.budget.max_seconds, round(self.elapsed_seconds(), 6))
        self._budget_exceeded(exc)
        raise exc

    def kill_switch_engaged(self, exc: KillSwitchEngaged) -> None:
        """The kill switch stopped one of the run's calls: it becomes the run's terminal stop."""
        if self._make_terminal(exc):
            self.span.add_event(semconv.EVENT_KILL_SWITCH_ENGAGED, {semconv.EVENT_ATTR_SCOPE: exc.scope})

    def tool_call_recorded(self, tool: str, disposition: ToolDisposition, outcome: ToolOutcome) -> None:
        """Count a finished tool call under its disposition."""
        with self._lock:
            self._tool_dispositions[disposition.value] = self._tool_dispositions.get(disposition.value, 0) + 1

    def llm_call_started(self, *, model: str, provider: str | None) -> str | None:
        """The provider of an LLM call (else the run's); the first call names the run's model and provider."""
        with self._lock:
            named = semconv.model_attributes(None if self.provider else provider, None if self.model else model)
            self.provider, self.model = self.provider or provider or None, self.model or model or None
        if named:
            self.span.set_attributes(named)
        return provider or self.provider

    def llm_call_recorded(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int,
        cost_usd: float | None,
        model: str | None = None,
    ) -> None:
        """Add one finished LLM call to the totals (``cost_usd`` None: ``model`` has no price).

        An unpriced call admitted before its model was known ends a ``max_usd`` run that does not
        allow it: the call happened, so it counts, and nothing starts after it."""
        with self._lock:
            self._llm_calls += 1
            self._input_tokens += input_tokens
            self._output_tokens += output_tokens
            self._cached_input_tokens += cached_input_tokens
            if cost_usd is None:
                self._unpriced_llm_calls += 1
            else:
                self._cost_usd += cost_usd
            spent = self._cost_usd
        if cost_usd is None:
            warn_unpriced(model or "unknown")
            try:
                self.budget.check_unpriced(model or "unknown", spent)
            except BudgetExceeded as exc:
                self._budget_exceeded(exc)

    # -- lifecycle ------------------------------------------------------------------------------

    def _start(self) -> None:
        self._started_at = self.settings.clock()
        parent = current_run.get()
        attributes = dict(self._base_attributes)
        attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_INVOKE_AGENT
        attributes[semconv.RUNTIME] = self.runtime
        if self.version is not None:
            attributes[semconv.GEN_AI_AGENT_VERSION] = self.version
        if self.conversation_id is not None:
            attributes[semconv.GEN_AI_CONVERSATION_ID] = self.conversation_id
        attributes.update(semconv.model_attributes(self.provider, self.model))
        if parent is not None:
            self.parent_run_id = parent.run_id
            attributes[semconv.RUN_PARENT_ID] = parent.run_id
        attributes.update(self.budget.span_attributes())
        self.span = start_span(self.tracer, semconv.run_span_name(self.agent), attributes, strict=self.settings.strict)

    def _finish(self, exc: BaseException | None) -> bool:
        """Settle the stop reason, write the totals and end the span; True swallows ``exc``."""
        suppress = False
        if isinstance(exc, RunStopped):
            reason = self._terminal.stop_reason if self._terminal is not None else exc.stop_reason
            if isinstance(exc, BudgetExceeded) and self._terminal is None:
                self._budget_exceeded(exc)
            suppress = True
        elif isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit):
            reason = StopReason.CANCELLED
        elif exc is not None:
            reason = StopReason.ERROR
        elif self._terminal is not None:
            reason = self._terminal.stop_reason
        else:
            reason = StopReason.COMPLETED
        with self._lock:
            # an explicit stop() wins unless the block then crashed
            if self._stop_reason is None or reason in (StopReason.ERROR, StopReason.CANCELLED):
                self._stop_reason = reason
            final = self._stop_reason
        span = self.span
        totals: dict[str, AttributeValue] = {
            semconv.STOP_REASON: final.value,
            semconv.RUN_STEPS: self._steps,
            semconv.RUN_TOOL_CALLS: self._tool_calls,
            semconv.RUN_LLM_CALLS: self._llm_calls,
            semconv.RUN_COST_USD: round(self._cost_usd, 9),
            semconv.GEN_AI_USAGE_INPUT_TOKENS: self._input_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: self._output_tokens,
        }
        if self._cached_input_tokens:
            totals[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = self._cached_input_tokens
        if self._unpriced_llm_calls:
            totals[semconv.RUN_UNPRICED_LLM_CALLS] = self._unpriced_llm_calls
            totals[semconv.RUN_COST_UNPRICED] = True
        if self._exhausted is not None:
            totals[semconv.BUDGET_EXHAUSTED] = self._exhausted.value
        span.set_attributes(totals)
        if final is StopReason.ERROR and exc is not None:
            span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, error_description(exc, self.settings)))
        end_span(span, strict=self.settings.strict)
        if self.settings.audit_stop_reasons and audit_logger.isEnabledFor(logging.INFO):
            audit_logger.info(
                "run %s of %s stopped: %s",
                self.run_id,
                self.agent,
                final.value,
                extra={
                    "agentwatch_run_id": self.run_id,
                    "agentwatch_agent": self.agent,
                    "agentwatch_tenant_id": self.tenant_id,
                    "agentwatch_stop_reason": final.value,
                    "agentwatch_steps": self._steps,
                    "agentwatch_tool_calls": self._tool_calls,
                    "agentwatch_cost_usd": self._cost_usd,
                },
            )
        return suppress

    def __repr__(self) -> str:
        reason = self._stop_reason.value if self._stop_reason else "running"
        return f"<AgentRun {self.agent} {self.run_id} {reason} steps={self._steps} tool_calls={self._tool_calls}>"


class RunScope:
    """What ``agent_run`` returns: enter it with ``with`` or ``async with`` to get the ``AgentRun``."""

    def __init__(self, run: AgentRun) -> None:
        self.run = run
        self._context_token: object = None
        self._run_token: Token[GovernedRun | None] | None = None
        self._step_token: Token[int | None] | None = None

    def __enter__(self) -> AgentRun:
        run = self.run
        run._start()
        self._context_token = otel_context.attach(trace.set_span_in_context(run.span))
        self._run_token = current_run.set(run)
        self._step_token = current_step.set(None)  # a sub-run starts outside any step of its own
        return run

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self._step_token is not None:
            current_step.reset(self._step_token)
        if self._run_token is not None:
            current_run.reset(self._run_token)
        otel_context.detach(self._context_token)  # type: ignore[arg-type]
        return self.run._finish(exc)

    async def __aenter__(self) -> AgentRun:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self.__exit__(exc_type, exc, tb)


def get_current_run() -> AgentRun | None:
    """The run the caller is inside, if any."""
    run = current_run.get()
    return run if isinstance(run, AgentRun) else None


def agent_run(
    agent: str,
    *,
    tenant_id: str | None = None,
    version: str | None = None,
    track: str = "stable",
    budget: Budget | None = None,
    gateway: ToolGateway | None = None,
    runtime: str = "custom",
    conversation_id: str | None = None,
    kill_switch: KillSwitch | KillSwitchSource | None = None,
    tracer_provider: TracerProvider | None = None,
    settings: InstrumentationSettings | None = None,
    provider: str | None = None,
    model: str | None = None,
) -> RunScope:
    """Start a run of ``agent``; use as ``with agent_run("support") as run:`` (or ``async with``).

    The kill switch is the one given here, else the gateway's. ``tracer_provider`` and
    ``settings`` default to what ``configure()`` installed (else the global provider and settings
    read from the environment). ``provider`` and ``model`` (``gen_ai.provider.name``,
    ``gen_ai.request.model`` of the run span, e.g. ``"openai"``, ``"gpt-4o"``) default to those of
    the run's first LLM call; ``provider`` is also the default provider of its LLM calls.
    """
    if not isinstance(agent, str) or not agent.strip():
        raise TypeError("agent must be a non-empty string naming the agent")
    if track not in _TRACKS:
        raise ValueError(f"track must be one of {sorted(_TRACKS)}, got {track!r}")
    resolved_settings = settings if settings is not None else current_settings()
    tracer = tracer_for(tracer_provider if tracer_provider is not None else current_tracer_provider())
    switch = KillSwitch.from_spec(kill_switch) if kill_switch is not None else None
    if switch is None and gateway is not None:
        switch = gateway.kill_switch
    run = AgentRun(
        agent,
        tenant_id=tenant_id,
        version=version,
        track=track,
        budget=budget if budget is not None else Budget(),
        gateway=gateway,
        runtime=runtime,
        conversation_id=conversation_id,
        kill_switch=switch,
        tracer=tracer,
        settings=resolved_settings,
    )
    run.provider, run.model = provider or None, model or None
    return RunScope(run)
