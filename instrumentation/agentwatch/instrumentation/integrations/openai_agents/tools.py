"""Tool governance for the OpenAI Agents SDK: every function tool call goes through a ``ToolGateway``.

``govern_tools(agent, gateway)`` replaces each function tool of the agent by a copy whose
invocation is ``gateway.acall(...)``: the gateway's policy (default deny), approvals, scoped
credentials, kill switch, idempotency, budgets and replay apply to the managed runtime exactly
as they do to a custom loop, and the gateway records the ``execute_tool`` span. The gateway runs
*its* implementation of the tool (the one registered under the tool's gateway name); to govern
tools whose only implementation is the SDK tool itself (an agent used as a tool, a tool from a
library), register ``tool_implementations(agent)`` with the gateway.

A refused call (policy, unknown tool, rejected approval) is by default answered to the model
with a refusal it can act on, and the run goes on (``on_denied="refuse"``); with
``on_denied="stop"`` the run stops with ``policy_denied`` / ``approval_rejected``, as in the
custom loop when the denial leaves the ``agent_run`` block. Budget and kill-switch stops always
stop the run. A model that calls a tool the agent was never given is screened by the same
policy (and always refused: such a call never executes), so a prompt-injected model probing for
a write tool shows up as a denial, not as an SDK error.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import threading
import typing
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from agents import Agent, FunctionTool, Handoff, Tool
from agents.exceptions import UserError
from agents.function_schema import function_schema
from agents.tool import default_tool_error_function
from agents.tool_context import ToolContext

from agentwatch.instrumentation._gateway import ToolGateway
from agentwatch.instrumentation._replay import ReplayedToolError
from agentwatch.instrumentation.errors import ApprovalRejected, RunStopped, ToolDenied
from agentwatch.instrumentation.integrations.openai_agents.state import SdkRun, active_run, parse_arguments

if TYPE_CHECKING:
    from agentwatch.instrumentation._gateway import ToolFunction

__all__ = [
    "Governance",
    "GovernedInvoker",
    "IdempotencyKey",
    "NameMapping",
    "OnDenied",
    "function_tools",
    "govern_tools",
    "governance_for",
    "is_governed",
    "refusal",
    "screen_unknown_calls",
    "sdk_tool_name",
    "tool_implementations",
]

OnDenied: TypeAlias = Literal["refuse", "stop"]
NameMapping: TypeAlias = Mapping[str, str] | Callable[[str], str]
"""SDK tool name → gateway tool name (a mapping, or a function such as ``lambda n: n.replace("_", ".", 1)``)."""
IdempotencyKey: TypeAlias = Callable[[str, Mapping[str, Any]], str | None]
"""(gateway tool name, arguments) → idempotency key for the call, or None."""

# Parameters the gateway fills in itself: never part of the schema the model sees.
_INJECTED_PARAMETERS: Final = frozenset({"credentials", "approval_token"})
_INVALID_NAME_CHARACTERS: Final = re.compile(r"[^A-Za-z0-9_-]")

_tool_context: Final[ContextVar[ToolContext[Any] | None]] = ContextVar("agentwatch_agents_tool_context", default=None)


def sdk_tool_name(gateway_name: str) -> str:
    """A gateway tool name the model can call (function names allow letters, digits, ``_`` and ``-``)."""
    return _INVALID_NAME_CHARACTERS.sub("_", gateway_name)


@dataclass(frozen=True, slots=True)
class Governance:
    """How one set of agents is governed: the gateway, the denial behaviour and the name mapping."""

    gateway: ToolGateway
    on_denied: OnDenied
    resolve: Callable[[str], str]
    idempotency_key: IdempotencyKey | None
    screen: ToolGateway
    """Same policy and kill switch as ``gateway`` but no implementations: decides calls to tools the agent lacks."""


def _resolver(names: NameMapping | None, gateway: ToolGateway) -> Callable[[str], str]:
    if callable(names):
        return names
    explicit = dict(names or {})
    # The default undoes sdk_tool_name for the gateway's own tools ("kb_search" -> "kb.search").
    by_sdk_name: dict[str, str | None] = {}
    for name in gateway.tools:
        sanitized = sdk_tool_name(name)
        by_sdk_name[sanitized] = None if sanitized in by_sdk_name else name  # ambiguous: no guess
    for name in gateway.tools:
        by_sdk_name[name] = name

    def resolve(sdk_name: str) -> str:
        if sdk_name in explicit:
            return explicit[sdk_name]
        return by_sdk_name.get(sdk_name) or sdk_name

    return resolve


def refusal(tool: str, exc: RunStopped) -> str:
    """What the model reads when the gateway refused its call: what happened and what to do instead."""
    if isinstance(exc, ApprovalRejected):
        return (
            f"Tool call refused: {tool} needs a human approval that was not granted ({exc.reason}). "
            "Do not retry it; tell the user it could not be done."
        )
    rule = exc.rule if isinstance(exc, ToolDenied) else "policy"
    return (
        f"Tool call refused by policy: {tool} is not allowed here (rule {rule}). "
        "Do not call it again; continue without it or tell the user it cannot be done."
    )


class GovernedInvoker:
    """``on_invoke_tool`` of a governed tool: parse the arguments, then ``gateway.acall`` inside the step."""

    def __init__(
        self,
        original: Callable[[ToolContext[Any], str], Awaitable[Any]],
        *,
        sdk_name: str,
        gateway_name: str,
        governance: Governance,
    ) -> None:
        self.original = original
        self.sdk_name = sdk_name
        self.gateway_name = gateway_name
        self.governance = governance

    async def __call__(self, ctx: ToolContext[Any], arguments: str) -> Any:
        governance = self.governance
        args = parse_arguments(arguments)
        if not isinstance(args, dict):
            return f"Tool call refused: the arguments of {self.sdk_name} must be a JSON object."
        state = active_run.get()
        key = governance.idempotency_key(self.gateway_name, args) if governance.idempotency_key else None
        token = _tool_context.set(ctx)
        try:
            scope: AbstractContextManager[None] = state.in_step() if state is not None else nullcontext()
            with scope:
                return await governance.gateway.acall(
                    self.gateway_name,
                    args,
                    run=state.run if state is not None else None,
                    call_id=getattr(ctx, "tool_call_id", None),
                    idempotency_key=key,
                )
        except (ToolDenied, ApprovalRejected) as exc:
            if governance.on_denied == "stop":
                raise
            return refusal(self.gateway_name, exc)
        except RunStopped:
            raise  # budgets and the kill switch always stop the run
        except ReplayedToolError as exc:
            return default_tool_error_function(ctx, exc)
        except Exception as exc:
            # what the SDK does for a failing function tool: the model is told, the run goes on
            # (the gateway already recorded the error on the tool span)
            return default_tool_error_function(ctx, exc)
        finally:
            _tool_context.reset(token)


def is_governed(tool: object) -> bool:
    """True for a function tool whose calls go through a gateway (``govern_tools``; an MCP tool with MCP governance)."""
    if not isinstance(tool, FunctionTool):
        return False
    if isinstance(tool.on_invoke_tool, GovernedInvoker):
        return True
    if getattr(tool, "_mcp_tool_binding", None) is None:
        return False
    from agentwatch.instrumentation.integrations.mcp import governs_mcp_calls

    return governs_mcp_calls()


def _governed_copy(tool: FunctionTool, governance: Governance) -> FunctionTool:
    governed = copy.copy(tool)  # FunctionTool.__copy__ rebinds the SDK's own invoker to the copy
    inner = governed.on_invoke_tool
    if isinstance(inner, GovernedInvoker):  # governed again: keep the SDK invoker, not our wrapper
        inner = inner.original
    governed.on_invoke_tool = GovernedInvoker(
        inner, sdk_name=tool.name, gateway_name=governance.resolve(tool.name), governance=governance
    )
    return governed


# Governed agents, for screening calls to tools they were never given. Agents are unhashable
# dataclasses, so they are keyed by identity and held weakly.
_bindings: dict[int, tuple[weakref.ref[Agent[Any]], Governance]] = {}
_bindings_lock: Final = threading.Lock()


def _agents(agents: Agent[Any] | Iterable[Agent[Any]]) -> list[Agent[Any]]:
    if isinstance(agents, Agent):
        return [agents]
    listed = list(agents)
    for agent in listed:
        if not isinstance(agent, Agent):
            raise TypeError(f"govern_tools() takes Agents SDK agents, got {type(agent).__name__}")
    return listed


def govern_tools(
    agents: Agent[Any] | Iterable[Agent[Any]],
    gateway: ToolGateway,
    *,
    on_denied: OnDenied = "refuse",
    names: NameMapping | None = None,
    idempotency_key: IdempotencyKey | None = None,
) -> None:
    """Put every function tool of ``agents`` behind ``gateway`` (in place; run it before the agents run).

    ``names`` maps SDK tool names to gateway names (default: the gateway tool that ``kb_search``
    stands for, ``kb.search``, else the same name). ``idempotency_key(tool, args)`` gives write
    tools a key so a repeated call returns the first result. Hosted tools (web search, file
    search) run at the provider and cannot be governed; tools of MCP servers are listed at run
    time and are governed only once converted to function tools in ``agent.tools``.
    """
    if on_denied not in ("refuse", "stop"):
        raise ValueError(f"on_denied must be 'refuse' or 'stop', got {on_denied!r}")
    if not isinstance(gateway, ToolGateway):
        raise TypeError("gateway must be an agentwatch ToolGateway")
    governance = Governance(
        gateway=gateway,
        on_denied=on_denied,
        resolve=_resolver(names, gateway),
        idempotency_key=idempotency_key,
        screen=ToolGateway(policy=gateway.policy, tools={}, kill_switch=gateway.kill_switch),
    )
    for agent in _agents(agents):
        agent.tools = [
            _governed_copy(tool, governance) if isinstance(tool, FunctionTool) else tool for tool in agent.tools
        ]
        key = id(agent)

        def forget(_: object, key: int = key) -> None:
            with _bindings_lock:
                _bindings.pop(key, None)

        with _bindings_lock:
            _bindings[key] = (weakref.ref(agent, forget), governance)


def governance_for(agent: object) -> Governance | None:
    """The governance ``govern_tools`` bound to ``agent``, if any."""
    with _bindings_lock:
        bound = _bindings.get(id(agent))
    if bound is None or bound[0]() is not agent:
        return None
    return bound[1]


def _known_tool_names(agent: Agent[Any]) -> set[str] | None:
    """Names the model may call on ``agent``; None when they are only known at run time (MCP servers)."""
    if agent.mcp_servers:
        return None
    names = {tool.name for tool in agent.tools if isinstance(tool, FunctionTool)}
    for handoff in agent.handoffs:
        names.add(handoff.tool_name if isinstance(handoff, Handoff) else Handoff.default_tool_name(handoff))
    return names


async def screen_unknown_calls(state: SdkRun, agent: Agent[Any], output: object) -> None:
    """Before the SDK handles the model's answer: send calls to tools the agent lacks through the gateway's policy.

    The screening gateway has no implementations, so such a call is always refused (a denial
    by policy, or ``unknown_tool``) and recorded; under ``on_denied="stop"`` the refusal stops
    the run (``policy_denied``), else the SDK goes on to answer the model that the tool does
    not exist.
    """
    governance = governance_for(agent)
    if governance is None or not isinstance(output, list):
        return
    known = _known_tool_names(agent)
    if known is None:
        return
    for item in output:
        if getattr(item, "type", None) != "function_call":
            continue
        name = getattr(item, "name", None)
        if not isinstance(name, str) or name in known:
            continue
        args = parse_arguments(getattr(item, "arguments", None))
        try:
            with state.in_step():
                await governance.screen.acall(
                    governance.resolve(name),
                    args if isinstance(args, dict) else {"arguments": args},
                    run=state.run,
                    call_id=getattr(item, "call_id", None),
                )
        except (ToolDenied, ApprovalRejected) as exc:
            if governance.on_denied == "stop":
                raise
            call_id = getattr(item, "call_id", None)
            if isinstance(call_id, str):
                state.refusals[call_id] = refusal(governance.resolve(name), exc)


def tool_implementations(
    agents: Agent[Any] | Iterable[Agent[Any]], *, names: NameMapping | None = None
) -> dict[str, ToolFunction]:
    """The agents' own function tools as gateway implementations: ``ToolGateway(tools=tool_implementations(agent))``.

    Call it before ``govern_tools`` (or after: governed tools are unwrapped). Each
    implementation runs the SDK tool with the tool context of the governed call it serves, so
    it can only run through the gateway, never on its own.
    """
    explicit = {} if callable(names) else dict(names or {})

    def mapping(sdk_name: str) -> str:
        return names(sdk_name) if callable(names) else explicit.get(sdk_name, sdk_name)

    implementations: dict[str, ToolFunction] = {}
    for agent in _agents(agents):
        for tool in agent.tools:
            if isinstance(tool, FunctionTool):
                invoker = tool.on_invoke_tool
                original = invoker.original if isinstance(invoker, GovernedInvoker) else invoker
                implementations[mapping(tool.name)] = _implementation(tool.name, original)
    return implementations


def _implementation(name: str, original: Callable[[ToolContext[Any], str], Awaitable[Any]]) -> ToolFunction:
    async def run_sdk_tool(**kwargs: Any) -> Any:
        ctx = _tool_context.get()
        if ctx is None:
            raise RuntimeError(f"{name} runs only through a governed tool call (govern_tools)")
        return await original(ctx, json.dumps(kwargs))

    run_sdk_tool.__name__ = name
    return run_sdk_tool


def function_tools(
    implementations: Mapping[str, Callable[..., Any]], *, names: Mapping[str, str] | None = None
) -> list[Tool]:
    """Describe gateway tools to an agent: one ``FunctionTool`` per implementation, to be governed.

    The schema comes from the implementation's signature and docstring, without the
    ``credentials`` and ``approval_token`` parameters the gateway fills in; the SDK name is
    ``names[gateway_name]`` or the gateway name with characters a model cannot call replaced
    (``kb.search`` → ``kb_search``). The tools only describe: run ``govern_tools(agent,
    gateway)`` so their calls execute through the gateway (an ungoverned call fails).
    """
    tools: list[Tool] = []
    for gateway_name, implementation in implementations.items():
        name = (names or {}).get(gateway_name) or sdk_tool_name(gateway_name)
        described = _without_injected_parameters(implementation, name)
        try:
            schema = function_schema(described, name_override=name, strict_json_schema=True)
        except UserError:  # free-form objects (a Mapping[str, Any] row) cannot be strict
            schema = function_schema(described, name_override=name, strict_json_schema=False)
        tools.append(
            FunctionTool(
                name=schema.name,
                description=schema.description or "",
                params_json_schema=schema.params_json_schema,
                on_invoke_tool=_ungoverned(gateway_name),
                strict_json_schema=schema.strict_json_schema,
            )
        )
    return tools


def _ungoverned(gateway_name: str) -> Callable[[ToolContext[Any], str], Awaitable[Any]]:
    async def refuse(ctx: ToolContext[Any], arguments: str) -> Any:
        raise RuntimeError(f"{gateway_name} executes through a ToolGateway: call govern_tools(agent, gateway) first")

    return refuse


def _without_injected_parameters(implementation: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A stand-in with the implementation's signature minus the gateway-injected parameters."""
    signature = inspect.signature(implementation)
    try:
        hints = typing.get_type_hints(implementation, include_extras=True)
    except Exception:  # unresolvable annotations: describe the parameters as untyped
        hints = {}

    def described(**kwargs: Any) -> None:
        return None

    described.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in _INJECTED_PARAMETERS]
    )
    described.__annotations__ = {key: value for key, value in hints.items() if key not in _INJECTED_PARAMETERS}
    described.__doc__ = implementation.__doc__
    described.__name__ = name
    return described
