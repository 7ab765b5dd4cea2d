"""LangChain tools behind the agentwatch ``ToolGateway``: every call a LangGraph agent makes is governed.

The gateway stays the one place tools execute, whatever runtime drives the agent: the LangChain
tools built here are facades (name, description, argument schema) whose calls go through
``gateway.call`` / ``gateway.acall``, so policy (default deny), approvals, scoped credentials, the
kill switch, idempotency and the run's budgets apply exactly as in a custom loop, and every call
gets the gateway's ``execute_tool`` span.

* ``gateway_tools(gateway)`` builds the tools from the functions registered with the gateway (the
  same ``tools={...}`` mapping a custom loop uses), with schemas inferred from their signatures.
* ``govern_tools(tools, gateway)`` wraps existing LangChain tools; the gateway runs its registered
  implementation (``tool_functions(tools)`` builds that mapping from ``@tool`` functions).
* ``governed_tool_node(gateway)`` is a ``ToolNode`` of governed tools that also sends calls to
  tools it does not know to the gateway, so a model steered into inventing a write tool is denied
  visibly (span, event, budget) instead of being answered quietly by the node.

A refused call (policy denial, unknown tool, rejected approval) is reported back to the model as an
error ``ToolMessage`` by default (``on_denied="refuse"``), or stops the run with ``policy_denied`` /
``approval_rejected`` (``on_denied="stop"``), which also holds when a ``ToolNode`` is configured to
swallow tool errors. Budgets and the kill switch always stop the run.

Gateway names often contain dots (``kb.search``) that model APIs reject in function names; the
LangChain name replaces every character outside ``[A-Za-z0-9_-]`` with ``_`` (``kb_search``).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, Protocol, TypeAlias, runtime_checkable
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langchain_core.tools.base import FILTERED_ARGS, create_schema_from_function
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from agentwatch.instrumentation._context import current_run, current_step
from agentwatch.instrumentation._gateway import ToolGateway
from agentwatch.instrumentation._run import AgentRun, get_current_run
from agentwatch.instrumentation.errors import ApprovalRejected, ToolDenied
from agentwatch.instrumentation.semconv import ToolRisk

if TYPE_CHECKING:
    from langchain_core.callbacks.manager import BaseRunManager
    from langgraph.prebuilt import ToolNode
    from langgraph.prebuilt.tool_node import ToolCallRequest
    from langgraph.types import Command

__all__ = [
    "GOVERNED_METADATA_KEY",
    "Activation",
    "GovernedTool",
    "Idempotency",
    "OnDenied",
    "ToolCallSite",
    "ToolCallSiteProvider",
    "gateway_tools",
    "govern_tools",
    "governed_tool_node",
    "lc_tool_name",
    "tool_functions",
]

OnDenied: TypeAlias = Literal["refuse", "stop"]
"""What a refused call does: tell the model (``refuse``) or end the run with the refusal's stop reason."""

Idempotency: TypeAlias = Literal["writes", "all", "none"]
"""Which calls carry the model's tool-call id as idempotency key (a retried node then cannot write twice)."""

GOVERNED_METADATA_KEY: Final = "agentwatch_governed"
"""Tool metadata key marking a governed tool: the callback handler leaves its span to the gateway."""

_GATEWAY_INJECTED: Final = ("credentials", "approval_token")  # filled by the gateway, never by the model
_UNSAFE_NAME_CHARACTERS: Final = re.compile(r"[^A-Za-z0-9_-]")
_MAX_TOOL_NAME: Final = 64  # longest function name the major model APIs accept


def lc_tool_name(gateway_name: str) -> str:
    """The name a model sees for gateway tool ``gateway_name`` (``kb.search`` → ``kb_search``)."""
    return _UNSAFE_NAME_CHARACTERS.sub("_", gateway_name)[:_MAX_TOOL_NAME]


# --- where a call happens: run, step, parent span ---------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCallSite:
    """Where a governed call happens: its run, step index, the span it belongs under, the model's call id."""

    run: AgentRun
    step: int | None
    parent: Span
    call_id: str | None


@runtime_checkable
class ToolCallSiteProvider(Protocol):
    """A callback handler that can say where the tool run ``lc_run_id`` happens (the agentwatch handler)."""

    def tool_call_site(self, lc_run_id: UUID) -> ToolCallSite | None: ...


_active_activation: ContextVar[object | None] = ContextVar("agentwatch_langgraph_activation", default=None)


class Activation:
    """The run, step and OpenTelemetry parent made current for one callback-delimited stretch of work.

    Callbacks come in start/end pairs that LangChain usually, but not always, calls in the same
    ``contextvars.Context`` (a generator resumed elsewhere, a handler run on another task). The
    restore therefore first proves it runs in the context that activated, by resetting a marker
    variable of its own; elsewhere it changes nothing, so a foreign context is never corrupted.
    """

    __slots__ = ("_marker", "_otel", "_run", "_step")

    def __init__(self, run: AgentRun, step: int | None, span: Span) -> None:
        self._marker: Token[object | None] = _active_activation.set(self)
        self._otel = otel_context.attach(trace.set_span_in_context(span))
        self._run = current_run.set(run)
        self._step = current_step.set(step)

    def restore(self) -> bool:
        """Undo the activation; False (and nothing changed) when called from another context."""
        try:
            _active_activation.reset(self._marker)
        except (ValueError, RuntimeError):  # another Context, or already restored
            return False
        current_step.reset(self._step)
        current_run.reset(self._run)
        otel_context.detach(self._otel)
        return True


@contextmanager
def _activated(site: ToolCallSite | None) -> Iterator[None]:
    if site is None:
        yield
        return
    activation = Activation(site.run, site.step, site.parent)
    try:
        yield
    finally:
        activation.restore()


def _site_of(run_manager: BaseRunManager | None) -> ToolCallSite | None:
    """The call site the agentwatch handler recorded for this tool run, if one is attached."""
    if run_manager is None:
        return None
    for handler in run_manager.handlers:
        if isinstance(handler, ToolCallSiteProvider):
            site = handler.tool_call_site(run_manager.run_id)
            if site is not None:
                return site
    return None


# --- the governed call --------------------------------------------------------------------------


def _content(result: Any) -> str:
    """What the model reads: text as is, anything else as JSON (the raw value stays the artifact)."""
    if isinstance(result, str):
        return result
    if result is None:
        return ""
    return json.dumps(result, default=str, ensure_ascii=False)


def _refusal_message(exc: ToolDenied | ApprovalRejected) -> str:
    # Written for the model: what happened and that retrying is pointless (no developer advice).
    if isinstance(exc, ApprovalRejected):
        return f"The tool {exc.tool!r} was not approved: {exc.reason}. Do not call it again; tell the user."
    return f"The tool {exc.tool!r} is not allowed ({exc.rule}). Do not call it again; continue without it."


@dataclass(frozen=True, slots=True)
class _Governance:
    """How one gateway tool is called: the gateway, its name there, and the refusal and idempotency rules."""

    gateway: ToolGateway
    tool: str
    on_denied: OnDenied
    idempotency: Idempotency

    def key(self, call_id: str | None) -> str | None:
        if call_id is None or self.idempotency == "none":
            return None
        if self.idempotency == "writes" and self.gateway.policy.decide(self.tool).risk is ToolRisk.READ:
            return None
        return call_id

    def refuse(self, exc: ToolDenied | ApprovalRejected, run: AgentRun | None) -> NoReturn:
        """Raise the refusal itself (``stop``) or a ``ToolException`` the tool turns into a message."""
        if self.on_denied == "stop":
            if run is not None:
                # Terminal, so the run stops even if a ToolNode turns the exception into a message.
                run._make_terminal(exc)
            raise exc
        raise ToolException(_refusal_message(exc)) from exc

    def _run_of(self, site: ToolCallSite | None) -> AgentRun | None:
        run = site.run if site is not None else get_current_run()
        if run is not None and run.gateway is None:
            # A run started without knowing its gateway (a handler given none) adopts it at its
            # first governed call, and with it the gateway's kill switch, as agent_run would have.
            run.gateway = self.gateway
            if run.kill_switch is None:
                run.kill_switch = self.gateway.kill_switch
        return run

    def call(self, args: Mapping[str, Any], site: ToolCallSite | None) -> Any:
        run = self._run_of(site)
        call_id = site.call_id if site is not None else None
        with _activated(site):
            try:
                return self.gateway.call(self.tool, args, run=run, call_id=call_id, idempotency_key=self.key(call_id))
            except (ToolDenied, ApprovalRejected) as exc:
                self.refuse(exc, run)

    async def acall(self, args: Mapping[str, Any], site: ToolCallSite | None) -> Any:
        run = self._run_of(site)
        call_id = site.call_id if site is not None else None
        with _activated(site):
            try:
                return await self.gateway.acall(
                    self.tool, args, run=run, call_id=call_id, idempotency_key=self.key(call_id)
                )
            except (ToolDenied, ApprovalRejected) as exc:
                self.refuse(exc, run)


class GovernedTool(BaseTool):
    """A LangChain tool whose every call goes through ``gateway.call`` (the gateway's function runs).

    The content the model reads is the result as text (JSON for structures); the raw result is the
    ``ToolMessage`` artifact, so a model or a replay can use the exact value the gateway returned.
    """

    gateway: ToolGateway
    gateway_tool: str
    on_denied: OnDenied = "refuse"
    idempotency: Idempotency = "writes"
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool | str | Callable[[ToolException], str] | None = True

    def _governance(self) -> _Governance:
        return _Governance(self.gateway, self.gateway_tool, self.on_denied, self.idempotency)

    def _arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        # A plain-string input arrives positionally: it fills the schema's fields in order.
        arguments = dict(zip(self.args, args, strict=False))
        arguments.update(kwargs)
        return arguments

    def _run(self, *args: Any, run_manager: CallbackManagerForToolRun | None = None, **kwargs: Any) -> tuple[str, Any]:
        result = self._governance().call(self._arguments(args, kwargs), _site_of(run_manager))
        return _content(result), result

    async def _arun(
        self, *args: Any, run_manager: AsyncCallbackManagerForToolRun | None = None, **kwargs: Any
    ) -> tuple[str, Any]:
        result = await self._governance().acall(self._arguments(args, kwargs), _site_of(run_manager))
        return _content(result), result


def _governed(
    *,
    gateway: ToolGateway,
    gateway_tool: str,
    name: str,
    description: str,
    args_schema: Any,
    on_denied: OnDenied,
    idempotency: Idempotency,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
) -> GovernedTool:
    if on_denied not in ("refuse", "stop"):
        raise ValueError(f"on_denied must be 'refuse' or 'stop', got {on_denied!r}")
    if idempotency not in ("writes", "all", "none"):
        raise ValueError(f"idempotency must be 'writes', 'all' or 'none', got {idempotency!r}")
    return GovernedTool(
        name=name,
        description=description,
        args_schema=args_schema,
        gateway=gateway,
        gateway_tool=gateway_tool,
        on_denied=on_denied,
        idempotency=idempotency,
        metadata={**(metadata or {}), GOVERNED_METADATA_KEY: True},
        tags=list(tags) if tags else None,
    )


def _registered_function(gateway: ToolGateway, name: str) -> Callable[..., Any]:
    return gateway._tools[name].function


@functools.lru_cache(maxsize=1024)
def _schema_of(name: str, function: Callable[..., Any]) -> Any:
    # Building a pydantic model per tool costs milliseconds; gateways (and so tools) are often per run.
    return create_schema_from_function(name, function, filter_args=[*FILTERED_ARGS, *_GATEWAY_INJECTED])


def gateway_tools(
    gateway: ToolGateway, *, on_denied: OnDenied = "refuse", idempotency: Idempotency = "writes"
) -> list[GovernedTool]:
    """LangChain tools for every function registered with ``gateway`` (schema from the signature).

    The ``credentials`` and ``approval_token`` parameters the gateway fills are left out of the
    schema the model sees; the description is the function's docstring.
    """
    tools: list[GovernedTool] = []
    seen: dict[str, str] = {}
    for gateway_name in gateway.tools:
        name = lc_tool_name(gateway_name)
        if name in seen:
            raise ValueError(f"gateway tools {seen[name]!r} and {gateway_name!r} both become {name!r} for the model")
        seen[name] = gateway_name
        function = _registered_function(gateway, gateway_name)
        schema = _schema_of(name, function)
        tools.append(
            _governed(
                gateway=gateway,
                gateway_tool=gateway_name,
                name=name,
                description=inspect.getdoc(function) or f"The {gateway_name} tool.",
                args_schema=schema,
                on_denied=on_denied,
                idempotency=idempotency,
            )
        )
    return tools


def _gateway_name(tool_name: str, gateway: ToolGateway, names: Mapping[str, str]) -> str:
    if tool_name in names:
        return names[tool_name]
    if tool_name in gateway.tools:
        return tool_name
    matches = [registered for registered in gateway.tools if lc_tool_name(registered) == tool_name]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(
        f"LangChain tool {tool_name!r} has no implementation registered with the gateway "
        f"(registered: {', '.join(gateway.tools) or 'none'}); register it (tool_functions() builds the "
        "mapping from LangChain tools) or map it with names={...}"
    )


def govern_tools(
    tools: Sequence[BaseTool],
    gateway: ToolGateway,
    *,
    names: Mapping[str, str] | None = None,
    on_denied: OnDenied = "refuse",
    idempotency: Idempotency = "writes",
) -> list[GovernedTool]:
    """Wrap LangChain tools so their calls go through ``gateway`` (which runs its registered function).

    Each tool keeps its name, description and argument schema. Its gateway name is ``names[name]``,
    else the same name, else the one registered name that maps to it (``kb.search`` for
    ``kb_search``); a tool the gateway cannot run is a ``ValueError`` here, not a surprise later.
    """
    mapping = dict(names or {})
    governed: list[GovernedTool] = []
    for tool in tools:
        if not isinstance(tool, BaseTool):
            raise TypeError(f"govern_tools takes LangChain tools (BaseTool), got {type(tool).__name__}")
        if isinstance(tool, GovernedTool):  # already governed: re-governed with these settings
            update = {"gateway": gateway, "on_denied": on_denied, "idempotency": idempotency}
            governed.append(tool.model_copy(update=update))
            continue
        governed.append(
            _governed(
                gateway=gateway,
                gateway_tool=_gateway_name(tool.name, gateway, mapping),
                name=tool.name,
                description=tool.description,
                args_schema=tool.args_schema,
                on_denied=on_denied,
                idempotency=idempotency,
                metadata=tool.metadata,
                tags=tool.tags,
            )
        )
    return governed


def tool_functions(
    tools: Sequence[BaseTool], *, names: Mapping[str, str] | None = None
) -> dict[str, Callable[..., Any]]:
    """The ``tools={name: function}`` mapping for a ``ToolGateway``, from ``@tool``-style LangChain tools.

    ``names`` maps a LangChain name to the gateway name (default: the same name).
    """
    mapping = dict(names or {})
    functions: dict[str, Callable[..., Any]] = {}
    for tool in tools:
        function = (tool.func or tool.coroutine) if isinstance(tool, StructuredTool) else getattr(tool, "func", None)
        if not callable(function):
            raise TypeError(
                f"tool {tool.name!r} ({type(tool).__name__}) has no plain function to register; "
                "register its implementation with the gateway yourself"
            )
        functions[mapping.get(tool.name, tool.name)] = function
    return functions


# --- a ToolNode that lets the gateway answer every call -------------------------------------------


class _UnregisteredCalls:
    """The ``ToolNode`` interceptor: a call to a tool the node does not know goes to the gateway too."""

    def __init__(self, gateway: ToolGateway, names: Mapping[str, str], on_denied: OnDenied) -> None:
        self._gateway = gateway
        self._names = names  # model-facing name -> gateway name
        self._on_denied = on_denied

    def _governance(self, tool_name: str) -> _Governance:
        return _Governance(self._gateway, self._names.get(tool_name, tool_name), self._on_denied, "none")

    @staticmethod
    def _message(
        request: ToolCallRequest, content: str, artifact: Any, status: Literal["success", "error"]
    ) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(
            content=content, artifact=artifact, name=call["name"], tool_call_id=call["id"], status=status
        )

    def __call__(
        self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], ToolMessage | Command[Any]]
    ) -> ToolMessage | Command[Any]:
        if request.tool is not None:
            return execute(request)
        call = request.tool_call
        site = _current_site(call["id"])
        try:
            result = self._governance(call["name"]).call(call["args"], site)
        except ToolException as refusal:
            return self._message(request, str(refusal), None, "error")
        return self._message(request, _content(result), result, "success")

    async def acall(
        self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]]
    ) -> ToolMessage | Command[Any]:
        if request.tool is not None:
            return await execute(request)
        call = request.tool_call
        site = _current_site(call["id"])
        try:
            result = await self._governance(call["name"]).acall(call["args"], site)
        except ToolException as refusal:
            return self._message(request, str(refusal), None, "error")
        return self._message(request, _content(result), result, "success")


def _current_site(call_id: str | None) -> ToolCallSite | None:
    # No tool run exists for an unknown tool, so the site comes from the node's context.
    run = get_current_run()
    if run is None:
        return None
    return ToolCallSite(run=run, step=current_step.get(), parent=trace.get_current_span(), call_id=call_id)


def governed_tool_node(
    gateway: ToolGateway,
    tools: Sequence[BaseTool] | None = None,
    *,
    names: Mapping[str, str] | None = None,
    on_denied: OnDenied = "refuse",
    idempotency: Idempotency = "writes",
    name: str = "tools",
) -> ToolNode:
    """A ``ToolNode`` whose calls all go through ``gateway``, including calls to tools it does not list.

    ``tools`` default to ``gateway_tools(gateway)``; LangChain tools given here are wrapped with
    ``govern_tools``. A call to a name the node does not know is still put to the gateway, which
    refuses it (default deny, or ``unknown_tool``) with a span, an event and a budget count.
    """
    from langgraph.prebuilt import ToolNode

    if tools is None:
        governed = gateway_tools(gateway, on_denied=on_denied, idempotency=idempotency)
    else:
        governed = govern_tools(tools, gateway, names=names, on_denied=on_denied, idempotency=idempotency)
    model_names = {tool.name: tool.gateway_tool for tool in governed}
    interceptor = _UnregisteredCalls(gateway, model_names, on_denied)
    return ToolNode(governed, name=name, wrap_tool_call=interceptor, awrap_tool_call=interceptor.acall)
