"""Where a ``Runner`` call and an agentwatch run meet: the wrapped ``Runner.run`` / ``run_sync`` / ``run_streamed``.

Each call becomes one agentwatch run (``runtime="openai-agents"``): the wrapper opens it (or adopts
the caller's own ``agent_run(..., runtime="openai-agents")`` block), adds agentwatch's run hooks,
lets the SDK run, and settles the stop reason from the outcome:

==========================================  ======================================================
outcome of the SDK call                      stop reason
==========================================  ======================================================
a result                                     ``completed``
``MaxTurnsExceeded``                         ``max_steps`` (the SDK's turn limit is a step budget)
a guardrail tripwire (input, output, tool)   ``guardrail``
an agentwatch stop raised inside the run     its own (budgets, denial, rejection, kill switch)
``CancelledError``, streamed ``cancel()``    ``cancelled``
any other exception                          ``error``
==========================================  ======================================================

Exceptions reach the caller unchanged, with one exception: an agentwatch stop that the SDK
wrapped (a tool's ``ToolDenied`` arrives as ``UserError``) is raised as itself. Inside the
caller's own ``agent_run`` block the SDK's stops are raised as agentwatch's (``BudgetExceeded``,
``GuardrailTripped``, chained to the SDK exception), so the block ends with the stop reason just
as a custom loop's does, and does not crash.

The turn limit and agentwatch's step budget are reconciled: when the budget sets ``max_steps``
and the caller did not pass ``max_turns``, agentwatch's budget is the limit (checked before each
model call, like the custom loop); otherwise the SDK's limit (``max_turns``, default 10) is
reported as the run's ``agentwatch.budget.max_steps`` when it is the lower one.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import Token
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, cast

from agents import Agent, RunConfig, RunResultStreaming, StreamEvent
from agents.exceptions import (
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    OutputGuardrailTripwireTriggered,
    ToolInputGuardrailTripwireTriggered,
    ToolOutputGuardrailTripwireTriggered,
)
from agents.lifecycle import RunHooksBase
from agents.run import DEFAULT_MAX_TURNS, Runner
from agents.run_state import RunState

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._budget import Budget
from agentwatch.instrumentation._guard import telemetry_failed
from agentwatch.instrumentation._installed import current_settings
from agentwatch.instrumentation._run import AgentRun, RunScope, agent_run, get_current_run
from agentwatch.instrumentation._settings import InstrumentationSettings
from agentwatch.instrumentation.errors import BudgetExceeded, GuardrailTripped, RunStopped
from agentwatch.instrumentation.integrations.openai_agents.state import (
    RUNTIME,
    SdkRun,
    active_run,
    content_value,
    provider_of,
)
from agentwatch.instrumentation.integrations.openai_agents.tools import governance_for
from agentwatch.instrumentation.integrations.openai_agents.tracing import (
    AgentwatchRunHooks,
    AgentwatchTracingProcessor,
    model_name,
    sdk_default_model,
    tool_not_found_refusal,
)
from agentwatch.instrumentation.killswitch import KillSwitch, KillSwitchSource
from agentwatch.instrumentation.semconv import BudgetName, StopReason

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["RUNNER_METHODS", "RunDefaults", "RunnerPatch", "stop_of"]

logger: Final = logging.getLogger("agentwatch.instrumentation")

RUNNER_METHODS: Final = ("run", "run_sync", "run_streamed")
_TRACKS: Final = frozenset(track.value for track in semconv.Track)
_GUARDRAIL_TRIPWIRES: Final = (
    InputGuardrailTripwireTriggered,
    OutputGuardrailTripwireTriggered,
    ToolInputGuardrailTripwireTriggered,
    ToolOutputGuardrailTripwireTriggered,
)
# Runs whose input was recorded: an adopted run keeps the first input of several SDK calls.
_input_recorded: weakref.WeakSet[AgentRun] = weakref.WeakSet()


@dataclass(frozen=True)
class RunDefaults:
    """What ``instrument()`` was given: the defaults of the runs the wrapper opens."""

    tracer_provider: TracerProvider | None = None
    settings: InstrumentationSettings | None = None
    budget: Budget | None = None
    tenant_id: str | None = None
    version: str | None = None
    track: str = "stable"
    kill_switch: KillSwitch | KillSwitchSource | None = None


def stop_of(exc: BaseException, *, max_turns: int | None = None, steps: int = 0) -> tuple[RunStopped | None, bool]:
    """The agentwatch stop an SDK outcome amounts to (None: cancellation or error), and whether it was translated.

    An agentwatch ``RunStopped`` is found through the SDK's wrapping (a ``UserError`` raised from
    it); ``MaxTurnsExceeded`` and guardrail tripwires are translated, chained to the original.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, RunStopped):
            return cause, False
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    translated: RunStopped | None = None
    if isinstance(exc, MaxTurnsExceeded):
        limit = max_turns if max_turns is not None else DEFAULT_MAX_TURNS
        translated = BudgetExceeded(BudgetName.STEPS, limit, steps)
    elif isinstance(exc, _GUARDRAIL_TRIPWIRES):
        translated = GuardrailTripped(f"{type(exc).__name__}: an Agents SDK guardrail tripped and stopped the run")
    if translated is None:
        return None, False
    translated.__cause__ = exc
    return translated, True


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit)


class _Session:
    """One SDK call under an agentwatch run: set up before the call, settled after it."""

    def __init__(
        self,
        defaults: RunDefaults,
        processor: AgentwatchTracingProcessor,
        starting_agent: Agent[Any],
        input: object,
        bound: inspect.BoundArguments,
    ) -> None:
        self._processor = processor
        self._input = input
        self._bound = bound
        arguments = bound.arguments
        current = get_current_run()
        watching = active_run.get()
        # The caller's own agent_run(..., runtime="openai-agents") block is this run, unless that
        # run is already driving an SDK call (then this is a nested run: an agent used as a tool).
        self.adopted: AgentRun | None = (
            current
            if current is not None and current.runtime == RUNTIME and (watching is None or watching.run is not current)
            else None
        )
        run_config = arguments.get("run_config")
        self._default_model = model_name(_config_value(run_config, "model"))
        explicit_turns = "max_turns" in arguments
        requested = arguments.get("max_turns") if explicit_turns else DEFAULT_MAX_TURNS
        budget = self.adopted.budget if self.adopted is not None else (defaults.budget or Budget())
        if budget.max_steps is not None and not explicit_turns:
            arguments["max_turns"] = requested = None  # agentwatch's step budget is the limit
        self.max_turns: int | None = requested if isinstance(requested, int) else None
        if (
            self.adopted is None
            and self.max_turns is not None
            and (budget.max_steps is None or self.max_turns < budget.max_steps)
        ):
            budget = replace(budget, max_steps=self.max_turns)
        self._scope: RunScope | None = None
        if self.adopted is None:
            self._scope = self._open(defaults, starting_agent, run_config, arguments, budget)
        self.state: SdkRun | None = None
        self.streamed = False
        self._token: Token[SdkRun | None] | None = None
        hooks = arguments.get("hooks")
        self._wrap_hooks = hooks is None or isinstance(hooks, RunHooksBase)  # else the SDK rejects them itself
        self._refuse_unknown_tools(starting_agent, run_config)

    def _open(
        self,
        defaults: RunDefaults,
        agent: Agent[Any],
        run_config: object,
        arguments: dict[str, Any],
        budget: Budget,
    ) -> RunScope:
        metadata = _config_value(run_config, "trace_metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        track = _text(metadata.get(semconv.TRACK)) or defaults.track
        if track not in _TRACKS:
            logger.warning("agentwatch: ignoring unknown track %r in trace_metadata", track)
            track = defaults.track
        conversation = arguments.get("conversation_id") or _config_value(run_config, "group_id")
        governance = governance_for(agent)
        # the model the SDK will call first: the run config's, else the agent's, else the SDK default
        model = self._default_model or model_name(agent.model) or sdk_default_model()
        return agent_run(
            agent.name,
            tenant_id=_text(metadata.get(semconv.TENANT_ID)) or defaults.tenant_id,
            version=_text(metadata.get(semconv.GEN_AI_AGENT_VERSION)) or defaults.version,
            track=track,
            budget=budget,
            gateway=governance.gateway if governance is not None else None,
            runtime=RUNTIME,
            conversation_id=_text(conversation),
            kill_switch=defaults.kill_switch,
            tracer_provider=defaults.tracer_provider,
            settings=defaults.settings,
            provider=provider_of(model) if model else None,
            model=model,
        )

    def _refuse_unknown_tools(self, agent: Agent[Any], run_config: object) -> None:
        """Under ``on_denied="refuse"`` a call to a tool the agent lacks is answered with the refusal, not an SDK error.

        Only when the caller left the SDK's defaults for missing tools (raise, default message).
        """
        governance = governance_for(agent)
        if governance is None or governance.on_denied != "refuse" or not isinstance(run_config, RunConfig | None):
            return
        config = run_config or RunConfig()
        if config.tool_not_found_behavior != "raise_error" or config.tool_error_formatter is not None:
            return
        self._bound.arguments["run_config"] = dataclasses.replace(
            config, tool_not_found_behavior="return_error_to_model", tool_error_formatter=tool_not_found_refusal
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Enter the run in the current context (the one the SDK call and its tasks inherit)."""
        run = self._scope.__enter__() if self._scope is not None else self.adopted
        assert run is not None
        self.state = SdkRun(run, default_model=self._default_model)
        self._token = active_run.set(self.state)
        if self._wrap_hooks:
            self._bound.arguments["hooks"] = AgentwatchRunHooks(self.state, self._bound.arguments.get("hooks"))
        if not isinstance(self._input, RunState) and run not in _input_recorded:
            _input_recorded.add(run)
            run.record_input(content_value(self._input))

    @property
    def run(self) -> AgentRun:
        assert self.state is not None
        return self.state.run

    def completed(self, final_output: object) -> None:
        self.run.record_output(content_value(final_output))
        self._settle(None)

    def outcome(self, exc: BaseException) -> tuple[BaseException, BaseException]:
        """(what the run is settled with, what the caller sees) for a failed SDK call."""
        if _is_cancellation(exc):
            return exc, exc
        stop, translated = stop_of(exc, max_turns=self.max_turns, steps=self.run.steps)
        if stop is None:
            return exc, exc
        if translated and self.adopted is None:
            return stop, exc  # the SDK's own exception, unchanged, for a caller without a run block
        return stop, stop

    def failed(self, exc: BaseException) -> BaseException:
        """Settle a failed call; returns the exception the caller must see."""
        settled_with, raised = self.outcome(exc)
        self._settle(settled_with)
        return raised

    def _settle(self, exc: BaseException | None) -> None:
        state = self.state
        assert state is not None
        try:
            state.close()
        except Exception as failure:
            state.failed("closing an Agents SDK run", failure)
        self._processor.forget(state)
        if self._token is not None:
            active_run.reset(self._token)
            self._token = None
        if self._scope is not None:
            self._scope.__exit__(type(exc) if exc is not None else None, exc, exc.__traceback__ if exc else None)
        elif self.streamed and exc is not None:
            _mark_adopted(state.run, exc)
        if state.errors:
            raise state.errors[0]  # only collected under strict settings (tests)

    def bound_call(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return self._bound.args, self._bound.kwargs


@functools.cache
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


def _config_value(run_config: object, name: str) -> object:
    if isinstance(run_config, dict):
        return run_config.get(name)
    return getattr(run_config, name, None)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class RunnerPatch:
    """Installs and removes the wrappers on ``Runner``; keeps the original descriptors to restore them exactly."""

    def __init__(self, processor: AgentwatchTracingProcessor) -> None:
        self.processor = processor
        self.defaults = RunDefaults()
        self._originals: dict[str, object] = {}

    def install(self) -> None:
        if self._originals:
            return
        for name in RUNNER_METHODS:
            original = Runner.__dict__[name]
            function = cast(Callable[..., Any], original.__func__)
            wrapper = {"run": self._wrap_run, "run_sync": self._wrap_run_sync, "run_streamed": self._wrap_run_streamed}
            self._originals[name] = original
            setattr(Runner, name, classmethod(wrapper[name](function)))

    def remove(self) -> None:
        for name, original in self._originals.items():
            setattr(Runner, name, original)
        self._originals.clear()

    def _session(
        self, function: Callable[..., Any], cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Session | None:
        try:
            bound = _signature(function).bind(cls, *args, **kwargs)
        except TypeError:
            return None  # a wrong call: let the SDK report it, outside any run
        agent = bound.arguments.get("starting_agent")
        if not isinstance(agent, Agent):
            return None
        try:
            return _Session(self.defaults, self.processor, agent, bound.arguments.get("input"), bound)
        except Exception as exc:  # the run could not be opened: the agent runs, unwatched
            settings = self.defaults.settings or current_settings()
            telemetry_failed("opening an agentwatch run for an Agents SDK call", exc, strict=settings.strict)
            return None

    def _wrap_run(self, function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(function)
        async def run(cls: type, *args: Any, **kwargs: Any) -> Any:
            session = self._session(function, cls, args, kwargs)
            if session is None:
                return await function(cls, *args, **kwargs)
            session.start()
            call_args, call_kwargs = session.bound_call()
            try:
                result = await function(*call_args, **call_kwargs)
            except BaseException as exc:
                raised = session.failed(exc)
                if raised is exc:
                    raise
                raise raised  # noqa: B904 - chained already (translated from, or wrapped by, the SDK error)
            session.completed(result.final_output)
            return result

        return run

    def _wrap_run_sync(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run_sync(cls: type, *args: Any, **kwargs: Any) -> Any:
            session = self._session(function, cls, args, kwargs)
            if session is None:
                return function(cls, *args, **kwargs)
            session.start()
            call_args, call_kwargs = session.bound_call()
            try:
                result = function(*call_args, **call_kwargs)
            except BaseException as exc:
                raised = session.failed(exc)
                if raised is exc:
                    raise
                raise raised  # noqa: B904 - chained already (translated from, or wrapped by, the SDK error)
            session.completed(result.final_output)
            return result

        return run_sync

    def _wrap_run_streamed(self, function: Callable[..., RunResultStreaming]) -> Callable[..., RunResultStreaming]:
        @functools.wraps(function)
        def run_streamed(cls: type, *args: Any, **kwargs: Any) -> RunResultStreaming:
            session = self._session(function, cls, args, kwargs)
            if session is None:
                return function(cls, *args, **kwargs)
            # The run lives in a context of its own: the SDK's background task inherits it, the
            # caller's context stays as it was, and the run is settled in it when the task is done.
            session.streamed = True
            context = contextvars.copy_context()
            try:
                result = context.run(_start_streamed, session, function)
            except BaseException as exc:
                raised = context.run(session.failed, exc)
                if raised is exc:
                    raise
                raise raised  # noqa: B904 - chained already
            _watch_streamed(session, context, result)
            return result

        return run_streamed


def _start_streamed(session: _Session, function: Callable[..., RunResultStreaming]) -> RunResultStreaming:
    session.start()
    call_args, call_kwargs = session.bound_call()
    return function(*call_args, **call_kwargs)


def _watch_streamed(session: _Session, context: contextvars.Context, result: RunResultStreaming) -> None:
    settled = False
    mapping_error: Exception | None = None

    def settle(_: object = None) -> None:
        nonlocal settled, mapping_error
        if settled:
            return
        settled = True
        exc = _streamed_outcome(result)
        try:
            if exc is None:
                context.run(session.completed, result.final_output)
            else:
                context.run(session.failed, exc)
        except Exception as failure:  # strict-mode mapping errors surface on the stream instead
            mapping_error = failure

    task = result.run_loop_task
    if task is None:
        settle()
    else:
        task.add_done_callback(settle)

    original_stream = result.stream_events

    async def stream_events() -> AsyncIterator[StreamEvent]:
        try:
            async for event in original_stream():
                yield event
        except BaseException as exc:
            settle()
            raised = session.outcome(exc)[1]
            if raised is exc:
                raise
            raise raised  # noqa: B904 - chained already
        settle()
        if mapping_error is not None:
            raise mapping_error

    setattr(result, "stream_events", stream_events)  # noqa: B010 - replaces a method on this one result


def _mark_adopted(run: AgentRun, exc: BaseException) -> None:
    """A streamed run inside the caller's block ended in the background: fix its stop reason on the run.

    The caller may never iterate the stream (and so never see the exception), so the block's
    exit must find the reason on the run itself.
    """
    if isinstance(exc, BudgetExceeded):
        run._budget_exceeded(exc)
    elif isinstance(exc, RunStopped):
        run._make_terminal(exc)
    else:
        run.stop(StopReason.CANCELLED if _is_cancellation(exc) else StopReason.ERROR)


def _streamed_outcome(result: RunResultStreaming) -> BaseException | None:
    """How a streamed run ended, as the exception a non-streamed run would have raised (None: completed)."""
    task = result.run_loop_task
    if task is not None and task.done() and task.cancelled():
        return asyncio.CancelledError()
    error = result.run_loop_exception
    if error is None:
        stored = getattr(result, "_stored_exception", None)
        error = stored if isinstance(stored, BaseException) else None
    if error is not None:
        return error
    if result.max_turns is not None and result.current_turn > result.max_turns:
        return MaxTurnsExceeded(f"Max turns ({result.max_turns}) exceeded")
    for guardrail in result.input_guardrail_results:
        if guardrail.output.tripwire_triggered:
            return InputGuardrailTripwireTriggered(guardrail)
    if getattr(result, "_cancel_mode", "none") != "none":
        return asyncio.CancelledError()
    return None
