"""The tool gateway: every tool call of an agent goes through here, whatever runtime drives it.

Per call, in order: budget (the call is refused before anything starts), then a span, the kill
switch, the policy (default deny, deny beats allow), an unknown-tool check, idempotency (a repeated
key returns the first result), approval, scoped credentials, and finally the tool itself.
Each decision is recorded on the ``execute_tool`` span as a disposition and an outcome, so a
denied or killed call is as visible as an executed one.

When a kill-switch source cannot be read the gateway fails closed for write and approval tools
(disposition ``killed``, rule ``kill_switch_unavailable``, raised as ``ToolDenied`` so the run can
go on with read-only tools) and fails open for read-only tools and steps (logged once per problem).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._approval import (
    ApprovalCaller,
    ApprovalDecision,
    ApprovalRequest,
    ApproverLike,
)
from agentwatch.instrumentation._context import current_run, current_step
from agentwatch.instrumentation._guard import end_span, error_description, start_span
from agentwatch.instrumentation._idempotency import IdempotencyLedger
from agentwatch.instrumentation._installed import current_settings, tracer_for
from agentwatch.instrumentation._policy import Policy, PolicyDecision
from agentwatch.instrumentation._remote import RemoteTool
from agentwatch.instrumentation._replay import REPLAY_UNRECORDED_RULE, Recording, ReplayedToolError
from agentwatch.instrumentation._runapi import GovernedRun
from agentwatch.instrumentation._settings import InstrumentationSettings
from agentwatch.instrumentation.errors import ApprovalRejected, KillSwitchEngaged, ToolDenied, UnknownTool
from agentwatch.instrumentation.killswitch import EnvKillSwitch, KillSwitch, KillSwitchSource
from agentwatch.instrumentation.semconv import ToolDisposition, ToolOutcome, ToolRisk

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

audit_logger: Final = logging.getLogger("agentwatch.audit")

KILL_SWITCH_UNAVAILABLE_RULE: Final = "kill_switch_unavailable"
_STANDALONE_IDEMPOTENCY_LIMIT: Final = 10_000

ToolFunction: TypeAlias = Callable[..., Any]


@runtime_checkable
class CredentialsProvider(Protocol):
    """Hands a tool the credentials scoped to it and to the tenant; values never reach a span."""

    def get(self, tool: str, tenant_id: str | None) -> Mapping[str, str] | None: ...


CredentialsLike: TypeAlias = CredentialsProvider | Callable[[str, str | None], Mapping[str, str] | None]


@dataclass(frozen=True, slots=True)
class _ToolSpec:
    function: ToolFunction
    is_async: bool
    takes_credentials: bool
    takes_approval_token: bool


def _inspect_tool(name: str, function: ToolFunction) -> _ToolSpec:
    if not callable(function):
        raise TypeError(f"tool {name!r} is not callable")
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        parameters = {}  # type: ignore[assignment]
    return _ToolSpec(
        function=function,
        is_async=inspect.iscoroutinefunction(function),
        takes_credentials="credentials" in parameters,
        takes_approval_token="approval_token" in parameters,
    )


def _inspect_remote(name: str, function: ToolFunction) -> _ToolSpec:
    """``_inspect_tool`` for a per-call function (a closure): its code object says it, without ``inspect.signature``."""
    code = getattr(function, "__code__", None)
    if code is None:
        return _inspect_tool(name, function)
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    return _ToolSpec(
        function=function,
        is_async=inspect.iscoroutinefunction(function),
        takes_credentials="credentials" in names,
        takes_approval_token="approval_token" in names,
    )


@dataclass(slots=True)
class _Call:
    """State of one call between the decision phase and the execution phase."""

    tool: str
    args: dict[str, Any]
    span: Span
    token: object
    run: GovernedRun | None
    settings: InstrumentationSettings
    decision: PolicyDecision
    idempotency_key: str | None
    call_id: str | None
    remote: _ToolSpec | None = None  # a RemoteTool's function: runs instead of a registered implementation
    secret_values: tuple[str, ...] = ()
    owned: concurrent.futures.Future[Any] | None = None  # resolved for later calls with the same key


class ToolGateway:
    """Owned tool gateway: policy, approvals, scoped credentials, kill switch, idempotency.

    ``tools`` maps names to callables that take the arguments as keywords; a tool that declares a
    ``credentials`` parameter receives the provider's mapping there, one that declares
    ``approval_token`` receives the approver's token. One gateway can serve many runs and threads.
    With ``replay=Recording(...)`` tools are never executed: the recording answers (``replayed``)
    after the same kill-switch and policy checks, and an unrecorded call is refused.

    ``kill_switch``: None (the default) is the environment kill switch, ``EnvKillSwitch()`` reading
    ``AGENTWATCH_KILL_SWITCH``, so no gateway is left without one; a switch or sources given here
    are used as given (add ``EnvKillSwitch()`` to keep the variable); ``False`` opts out entirely.
    """

    def __init__(
        self,
        *,
        policy: Policy,
        tools: Mapping[str, ToolFunction],
        approver: ApproverLike | None = None,
        credentials: CredentialsLike | None = None,
        kill_switch: KillSwitch | KillSwitchSource | Sequence[KillSwitchSource] | Literal[False] | None = None,
        approval_timeout: float = 300.0,
        tracer_provider: TracerProvider | None = None,
        settings: InstrumentationSettings | None = None,
        replay: Recording | None = None,
    ) -> None:
        if not isinstance(policy, Policy):
            raise TypeError("policy must be an agentwatch Policy(allow=..., require_approval=..., deny=...)")
        self.policy = policy
        self._tools = {name: _inspect_tool(name, fn) for name, fn in tools.items()}
        self._approvals = ApprovalCaller(approver, timeout=approval_timeout)
        self._credentials = _credentials_function(credentials)
        self.kill_switch: KillSwitch | None
        if kill_switch is None:
            # Not wiring a kill switch must not mean having none: operators can always stop
            # every gateway with AGENTWATCH_KILL_SWITCH. kill_switch=False opts out.
            self.kill_switch = KillSwitch(EnvKillSwitch())
        elif kill_switch is False:
            self.kill_switch = None
        else:
            self.kill_switch = KillSwitch.from_spec(kill_switch)
        self._tracer_provider = tracer_provider
        self._settings = settings
        self._standalone_idempotency = IdempotencyLedger(limit=_STANDALONE_IDEMPOTENCY_LIMIT)
        self.replay = replay

    @property
    def tools(self) -> tuple[str, ...]:
        """Names of the registered tools."""
        return tuple(self._tools)

    def close(self) -> None:
        """Release the approval worker threads."""
        self._approvals.close()

    # -- public entry points --------------------------------------------------------------------

    def call(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        run: GovernedRun | None = None,
        call_id: str | None = None,
        idempotency_key: str | None = None,
        remote: RemoteTool | None = None,
    ) -> Any:
        """Call ``tool`` with ``args`` through the gateway (sync tools only).

        ``remote``: the tool is served elsewhere (an MCP server); see ``RemoteTool``.
        """
        call = self._begin(tool, args, run=run, call_id=call_id, idempotency_key=idempotency_key, remote=remote)
        try:
            self._screen(call)
            if self.replay is not None:
                return self._replayed(call, self.replay)
            pending = self._claim(call)
            if pending is not None:
                return self._finish_deduplicated(call, pending.result())
            try:
                approval = self._approvals.decide(self._approval_request(call)) if self._needs_approval(call) else None
                function, kwargs = self._prepare(call, approval)
                if self._spec(call).is_async:
                    raise TypeError(f"tool {tool!r} is async: use acall()/AgentRun.acall_tool()")
                result = self._execute(call, function, kwargs, approval)
            except BaseException as exc:
                self._abandon(call, exc)
                raise
            return self._settle(call, result)
        finally:
            self._end(call)

    async def acall(
        self,
        tool: str,
        args: Mapping[str, Any] | None = None,
        *,
        run: GovernedRun | None = None,
        call_id: str | None = None,
        idempotency_key: str | None = None,
        remote: RemoteTool | None = None,
    ) -> Any:
        """Call ``tool`` from async code: async tools are awaited, sync ones run in a worker thread.

        Either way the call is bounded by the run's time budget.
        """
        call = self._begin(tool, args, run=run, call_id=call_id, idempotency_key=idempotency_key, remote=remote)
        try:
            self._screen(call)
            if self.replay is not None:
                return self._replayed(call, self.replay)
            pending = self._claim(call)
            if pending is not None:
                return self._finish_deduplicated(call, await asyncio.wrap_future(pending))
            try:
                needs_approval = self._needs_approval(call)
                approval = await self._approvals.adecide(self._approval_request(call)) if needs_approval else None
                function, kwargs = self._prepare(call, approval)
                # A sync tool runs in a worker thread (the context, so the run and its span,
                # goes with it), as the runtimes themselves run sync tools: a slow one must not
                # stall the event loop, and parallel tool calls keep running in parallel.
                awaitable = function(**kwargs) if self._spec(call).is_async else asyncio.to_thread(function, **kwargs)
                result = await self._aexecute(call, awaitable, approval)
            except BaseException as exc:
                self._abandon(call, exc)
                raise
            return self._settle(call, result)
        finally:
            self._end(call)

    # -- phases ---------------------------------------------------------------------------------

    def _begin(
        self,
        tool: str,
        args: Mapping[str, Any] | None,
        *,
        run: GovernedRun | None,
        call_id: str | None,
        idempotency_key: str | None,
        remote: RemoteTool | None = None,
    ) -> _Call:
        if not isinstance(tool, str) or not tool:
            raise TypeError(f"tool name must be a non-empty string, got {tool!r}")
        if args is not None and type(args) is not dict and not isinstance(args, Mapping):
            raise TypeError(f"tool arguments must be a mapping of keyword arguments, got {type(args).__name__}")
        run = run if run is not None else current_run.get()
        if run is not None:
            run.admit_tool_call()  # budgets: refused before any span or side effect
            settings = run.settings
            tracer = run.tracer
            attributes = run.span_attributes()
        else:
            settings = self._settings_in_force()
            tracer = tracer_for(self._tracer_provider or trace.get_tracer_provider())
            attributes = {}
        decision = self.policy.decide(tool)
        attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_EXECUTE_TOOL
        attributes[semconv.GEN_AI_TOOL_NAME] = tool
        attributes[semconv.GEN_AI_TOOL_TYPE] = "function"
        attributes[semconv.TOOL_RISK] = decision.risk.value
        attributes[semconv.POLICY_RULE] = decision.rule
        step = current_step.get()
        if step is not None:
            attributes[semconv.STEP_INDEX] = step
        if call_id:
            attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
        if idempotency_key:
            attributes[semconv.TOOL_IDEMPOTENCY_KEY] = idempotency_key
        name, kind = semconv.tool_span_name(tool), SpanKind.INTERNAL
        if remote is not None:
            attributes.update(remote.attributes)
            name, kind = remote.span_name or name, remote.kind
        links = remote.links if remote is not None else None
        span = start_span(tracer, name, attributes, strict=settings.strict, kind=kind, links=links)
        token = otel_context.attach(trace.set_span_in_context(span))
        return _Call(
            tool=tool,
            args=dict(args or {}),
            span=span,
            token=token,
            run=run,
            settings=settings,
            decision=decision,
            idempotency_key=idempotency_key,
            call_id=call_id,
            remote=_inspect_remote(tool, remote.function) if remote is not None else None,
        )

    def _screen(self, call: _Call) -> None:
        """Kill switch, policy and registration: raise before the tool can run."""
        switch = call.run.kill_switch if call.run is not None else self.kill_switch
        if switch is not None:
            agent = call.run.agent if call.run is not None else ""
            tenant = call.run.tenant_id if call.run is not None else None
            state = switch.check(agent=agent, tenant_id=tenant)
            if state.engaged:
                scope = state.scope or "*"
                call.span.add_event(semconv.EVENT_KILL_SWITCH_ENGAGED, {semconv.EVENT_ATTR_SCOPE: scope})
                self._block(call, ToolDisposition.KILLED, "kill_switch")
                error = KillSwitchEngaged(scope, f"source {state.source}")
                if call.run is not None:
                    call.run.kill_switch_engaged(error)
                raise error
            if state.unavailable and call.decision.risk is not ToolRisk.READ:
                self._block(call, ToolDisposition.KILLED, KILL_SWITCH_UNAVAILABLE_RULE)
                raise ToolDenied(
                    call.tool,
                    KILL_SWITCH_UNAVAILABLE_RULE,
                    f"tool {call.tool!r} refused: a kill-switch source cannot be read ({'; '.join(state.unavailable)}) "
                    "and write or approval tools fail closed until it can",
                )
        if call.decision.verdict == "deny":
            call.span.add_event(
                semconv.EVENT_POLICY_DENIED,
                {semconv.EVENT_ATTR_TOOL: call.tool, semconv.EVENT_ATTR_RULE: call.decision.rule},
            )
            self._block(call, ToolDisposition.DENIED, call.decision.rule)
            raise ToolDenied(call.tool, call.decision.rule)
        if call.remote is None and call.tool not in self._tools:
            call.span.add_event(
                semconv.EVENT_POLICY_DENIED,
                {semconv.EVENT_ATTR_TOOL: call.tool, semconv.EVENT_ATTR_RULE: "unknown_tool"},
            )
            self._block(call, ToolDisposition.DENIED, "unknown_tool")
            raise UnknownTool(call.tool, list(self._tools))

    def _idempotency_store(self, call: _Call) -> IdempotencyLedger:
        return call.run.idempotency if call.run is not None else self._standalone_idempotency

    def _claim(self, call: _Call) -> concurrent.futures.Future[Any] | None:
        """None when this call runs the tool; else the future of the earlier call with the same key."""
        if not call.idempotency_key:
            return None
        owner, future = self._idempotency_store(call).claim(call.tool, call.idempotency_key)
        if not owner:
            return future
        call.owned = future
        return None

    def _settle(self, call: _Call, result: Any) -> Any:
        if call.owned is not None:
            call.owned.set_result(result)
        return result

    def _abandon(self, call: _Call, exc: BaseException) -> None:
        if call.owned is None or call.idempotency_key is None:
            return
        self._idempotency_store(call).forget(call.tool, call.idempotency_key)
        call.owned.set_exception(exc)

    def _spec(self, call: _Call) -> _ToolSpec:
        return call.remote if call.remote is not None else self._tools[call.tool]

    def _needs_approval(self, call: _Call) -> bool:
        return call.decision.verdict == "approval"

    def _approval_request(self, call: _Call) -> ApprovalRequest:
        call.span.add_event(semconv.EVENT_APPROVAL_REQUESTED, {semconv.EVENT_ATTR_TOOL: call.tool})
        run = call.run
        return ApprovalRequest(
            tool=call.tool,
            args=dict(call.args),
            agent=run.agent if run is not None else "",
            run_id=run.run_id if run is not None else None,
            tenant_id=run.tenant_id if run is not None else None,
            call_id=call.call_id,
            rule=call.decision.rule,
        )

    def _prepare(self, call: _Call, approval: ApprovalDecision | None) -> tuple[ToolFunction, dict[str, Any]]:
        """Record the approval outcome; return the tool and its keyword arguments."""
        if approval is not None:
            event_attributes: dict[str, str] = {semconv.EVENT_ATTR_TOOL: call.tool}
            if approval.approver:
                event_attributes[semconv.EVENT_ATTR_APPROVER] = approval.approver
            if not approval.approved:
                event_attributes[semconv.EVENT_ATTR_REASON] = approval.reason or "rejected"
                call.span.add_event(semconv.EVENT_APPROVAL_REJECTED, event_attributes)
                self._block(call, ToolDisposition.REJECTED, call.decision.rule)
                raise ApprovalRejected(call.tool, approval.reason or "rejected by approver")
            call.span.add_event(semconv.EVENT_APPROVAL_GRANTED, event_attributes)
        spec = self._spec(call)
        if not spec.takes_credentials and not spec.takes_approval_token:
            return spec.function, call.args  # already a private copy
        kwargs = dict(call.args)
        if spec.takes_credentials:
            kwargs["credentials"] = self._scoped_credentials(call)
        if spec.takes_approval_token and approval is not None and approval.token is not None:
            kwargs["approval_token"] = approval.token
        return spec.function, kwargs

    def _scoped_credentials(self, call: _Call) -> Mapping[str, str]:
        if self._credentials is None:
            return {}
        tenant = call.run.tenant_id if call.run is not None else None
        scoped = self._credentials(call.tool, tenant) or {}
        # Remembered so captured arguments, results and error messages are scrubbed of them.
        call.secret_values = tuple(v for v in scoped.values() if isinstance(v, str))
        return scoped

    def _execute(
        self, call: _Call, function: ToolFunction, kwargs: dict[str, Any], approval: ApprovalDecision | None
    ) -> Any:
        try:
            result = function(**kwargs)
        except Exception as exc:
            self._failed(call, exc, approval)
            raise
        self._succeeded(call, result, approval)
        return result

    async def _aexecute(self, call: _Call, awaitable: Awaitable[Any], approval: ApprovalDecision | None) -> Any:
        remaining = call.run.remaining_seconds() if call.run is not None else None
        try:
            if remaining is None:
                result = await awaitable
            else:
                result = await asyncio.wait_for(awaitable, timeout=remaining)
        except TimeoutError as exc:
            if call.run is not None and remaining is not None:
                self._failed(call, exc, approval)
                call.run.time_exhausted()  # raises BudgetExceeded(seconds)
            raise
        except Exception as exc:
            self._failed(call, exc, approval)
            raise
        self._succeeded(call, result, approval)
        return result

    # -- recording ------------------------------------------------------------------------------

    def _disposition_after_run(self, approval: ApprovalDecision | None) -> ToolDisposition:
        return ToolDisposition.APPROVED if approval is not None else ToolDisposition.ALLOWED

    def _succeeded(self, call: _Call, result: Any, approval: ApprovalDecision | None) -> None:
        disposition = self._disposition_after_run(approval)
        call.span.set_attributes(
            {semconv.TOOL_DISPOSITION: disposition.value, semconv.TOOL_OUTCOME: ToolOutcome.OK.value}
        )
        self._capture(call, result=result)
        self._audit(call, disposition, ToolOutcome.OK)

    def _failed(self, call: _Call, exc: BaseException, approval: ApprovalDecision | None) -> None:
        disposition = self._disposition_after_run(approval)
        call.span.set_attributes(
            {
                semconv.TOOL_DISPOSITION: disposition.value,
                semconv.TOOL_OUTCOME: ToolOutcome.ERROR.value,
                semconv.ERROR_TYPE: type(exc).__qualname__,
            }
        )
        call.span.set_status(Status(StatusCode.ERROR, error_description(exc, call.settings, call.secret_values)))
        self._capture(call, result=None)
        self._audit(call, disposition, ToolOutcome.ERROR)

    def _finish_deduplicated(self, call: _Call, result: Any) -> Any:
        call.span.set_attributes(
            {semconv.TOOL_DISPOSITION: ToolDisposition.DEDUPLICATED.value, semconv.TOOL_OUTCOME: ToolOutcome.OK.value}
        )
        self._capture(call, result=result)
        self._audit(call, ToolDisposition.DEDUPLICATED, ToolOutcome.OK)
        return result

    def _replayed(self, call: _Call, recording: Recording) -> Any:
        recorded = recording.take(call.tool, call.args)
        if recorded is None:
            self._block(call, ToolDisposition.DENIED, REPLAY_UNRECORDED_RULE)
            raise ToolDenied(
                call.tool,
                REPLAY_UNRECORDED_RULE,
                f"tool {call.tool!r} was called with arguments the recording does not have; "
                "replay never executes a tool, so the call was refused",
            )
        outcome = ToolOutcome.ERROR if recorded.error is not None else ToolOutcome.OK
        call.span.set_attributes(
            {semconv.TOOL_DISPOSITION: ToolDisposition.REPLAYED.value, semconv.TOOL_OUTCOME: outcome.value}
        )
        self._capture(call, result=recorded.result)
        self._audit(call, ToolDisposition.REPLAYED, outcome)
        if recorded.error is not None:
            raise ReplayedToolError(recorded.error)
        return recorded.result

    def _block(self, call: _Call, disposition: ToolDisposition, rule: str) -> None:
        call.span.set_attributes(
            {
                semconv.TOOL_DISPOSITION: disposition.value,
                semconv.TOOL_OUTCOME: ToolOutcome.BLOCKED.value,
                semconv.POLICY_RULE: rule,
            }
        )
        self._capture(call, result=None)
        self._audit(call, disposition, ToolOutcome.BLOCKED, rule=rule)

    def _capture(self, call: _Call, *, result: Any) -> None:
        if not call.settings.capture_content:
            return
        secrets = call.secret_values
        redactor = call.settings.redactor
        call.span.set_attribute(
            semconv.GEN_AI_TOOL_CALL_ARGUMENTS, redactor.to_attribute(call.args, secret_values=secrets)
        )
        if result is not None:
            call.span.set_attribute(
                semconv.GEN_AI_TOOL_CALL_RESULT, redactor.to_attribute(result, secret_values=secrets)
            )

    def _audit(
        self, call: _Call, disposition: ToolDisposition, outcome: ToolOutcome, *, rule: str | None = None
    ) -> None:
        if call.run is not None:
            call.run.tool_call_recorded(call.tool, disposition, outcome)
        if not call.settings.audit_tool_calls or not audit_logger.isEnabledFor(logging.INFO):
            return
        audit_logger.info(
            "tool call %s: %s/%s",
            call.tool,
            disposition.value,
            outcome.value,
            extra={
                "agentwatch_tool": call.tool,
                "agentwatch_disposition": disposition.value,
                "agentwatch_outcome": outcome.value,
                "agentwatch_rule": rule or call.decision.rule,
                "agentwatch_run_id": call.run.run_id if call.run is not None else None,
                "agentwatch_tenant_id": call.run.tenant_id if call.run is not None else None,
            },
        )

    def _end(self, call: _Call) -> None:
        otel_context.detach(call.token)  # type: ignore[arg-type]  # logs (never raises) on a foreign context
        end_span(call.span, strict=call.settings.strict)

    def _settings_in_force(self) -> InstrumentationSettings:
        if self._settings is not None:
            return self._settings
        return current_settings()


def _credentials_function(
    credentials: CredentialsLike | None,
) -> Callable[[str, str | None], Mapping[str, str] | None] | None:
    if credentials is None:
        return None
    if isinstance(credentials, CredentialsProvider):
        return credentials.get
    if callable(credentials):
        return credentials
    raise TypeError("credentials must be a callable (tool, tenant_id) -> mapping or have get(tool, tenant_id)")
