"""The gateway side of an MCP ``tools/call``: naming, gateway resolution, span shape, refusals.

Shared by the in-process integration (``ClientSession.call_tool`` patched) and the proxy
(``agentwatch mcp-proxy``). Nothing here imports the ``mcp`` SDK at import time.

Naming: an MCP tool is governed as ``{server}.{tool}`` (``github.create_issue``), where the
server is the name the client configured for it (the Agents SDK server's ``name``, the
connection name of ``langchain-mcp-adapters``, the proxy's upstream name, ``govern_session``),
else the name the server announced in ``initialize``. The server part is sanitized to
``[A-Za-z0-9_-]`` (anything else becomes ``_``) and capped at 64 characters, so it stays a
bounded label; the tool part is kept as the server spells it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import AttributeValue

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._context import current_run
from agentwatch.instrumentation._gateway import ToolGateway
from agentwatch.instrumentation._policy import Policy
from agentwatch.instrumentation._remote import RemoteTool
from agentwatch.instrumentation._replay import ReplayedToolError
from agentwatch.instrumentation._runapi import GovernedRun
from agentwatch.instrumentation.errors import ApprovalRejected, RunStopped, ToolDenied
from agentwatch.instrumentation.semconv import StopReason

logger: Final = logging.getLogger("agentwatch.instrumentation")

OnDenied: TypeAlias = Literal["refuse", "stop"]
UNNAMED_SERVER: Final = "mcp"
_SERVER_NAME_LIMIT: Final = 64
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")

IDEMPOTENCY_META_KEY: Final = "agentwatch/idempotency_key"
"""A ``params._meta`` key whose value is the call's idempotency key (a repeated key returns the first result)."""

server_name_var: Final[ContextVar[str | None]] = ContextVar("agentwatch_mcp_server", default=None)
"""The configured name of the MCP server a call is made to, set by the client integrations."""


def server_label(name: str | None) -> str:
    """The bounded server part of a tool name: ``[A-Za-z0-9_-]``, at most 64 characters."""
    label = _UNSAFE.sub("_", (name or "").strip())[:_SERVER_NAME_LIMIT]
    return label or UNNAMED_SERVER


def qualified_name(server: str | None, tool: str) -> str:
    """The name the gateway's policy sees: ``{server}.{tool}`` (``github.create_issue``)."""
    return f"{server_label(server)}.{tool}"


@contextmanager
def calling_server(name: str | None) -> Iterator[None]:
    """Calls made inside go to the MCP server configured as ``name``."""
    token = server_name_var.set(name)
    try:
        yield
    finally:
        server_name_var.reset(token)


class McpToolError(Exception):
    """The MCP server answered ``isError``: the gateway records outcome ``error``; the result is returned."""

    def __init__(self, result: Any) -> None:
        super().__init__("the MCP tool reported an error")
        self.result = result


@dataclass(frozen=True, slots=True)
class McpGovernance:
    """How MCP tool calls in this process are governed (``integrations.mcp.instrument(...)``).

    ``gateway``: the gateway used outside a run that has its own (a run's gateway wins).
    ``on_denied``: ``"refuse"`` answers a refused call with an MCP error result the model can
    read (the run goes on), ``"stop"`` also stops the run with ``policy_denied`` /
    ``approval_rejected``. ``hide_denied``: leave tools the policy denies out of ``tools/list``.
    ``require_gateway``: with no gateway in reach, refuse every call (the default: no policy allowed
    it); ``False`` lets such calls through, traced and kill-switchable but ungoverned.
    """

    gateway: ToolGateway | None = None
    on_denied: OnDenied = "refuse"
    hide_denied: bool = False
    require_gateway: bool = True


_governance: McpGovernance = McpGovernance()
_lock: Final = threading.Lock()
_fallback: dict[bool, ToolGateway] = {}
_warned: list[bool] = []


def governance() -> McpGovernance:
    return _governance


def set_governance(value: McpGovernance) -> None:
    global _governance  # noqa: PLW0603  # one process-wide setting, swapped whole
    _governance = value


def _fallback_gateway(require: bool) -> ToolGateway:
    with _lock:
        gateway = _fallback.get(require)
        if gateway is None:
            # no policy was given: refuse (default deny), unless require_gateway=False lets the call
            # through (still traced, budgeted and kill-switchable through AGENTWATCH_KILL_SWITCH)
            gateway = ToolGateway(policy=Policy(allow=[] if require else ["*"]), tools={})
            _fallback[require] = gateway
        if not _warned:
            _warned.append(True)
            logger.warning(
                "MCP tool call outside any ToolGateway: %s; pass "
                "agentwatch.instrumentation.integrations.mcp.instrument(gateway=...) or run it in "
                "agent_run(..., gateway=...) to apply a policy",
                "refused (no policy allows it)" if require else "allowed and traced (require_gateway=False)",
            )
    return gateway


def runtime_run() -> tuple[GovernedRun | None, AbstractContextManager[Any]]:
    """The agentwatch run a call belongs to (a custom loop's, LangGraph's or the Agents SDK's) and its step scope."""
    run = current_run.get()
    sdk = sys.modules.get("agentwatch.instrumentation.integrations.openai_agents.state")
    state = sdk.active_run.get() if sdk is not None else None
    if state is not None and (run is None or run is state.run):
        return state.run, state.in_step()  # the SDK's turn is the step
    return run, nullcontext()


def gateway_for(run: GovernedRun | None, settings: McpGovernance | None = None) -> ToolGateway:
    """The run's gateway, else the configured one, else the fallback (allow-all, or deny-all when required)."""
    chosen = settings or _governance
    own = getattr(run, "gateway", None) if run is not None else None
    if isinstance(own, ToolGateway):
        return own
    if chosen.gateway is not None:
        return chosen.gateway
    return _fallback_gateway(chosen.require_gateway)


def is_listed(gateway: ToolGateway, server: str | None, tool: str, settings: McpGovernance | None = None) -> bool:
    """Whether ``tools/list`` shows the tool: all are listed unless ``hide_denied`` and the policy denies it."""
    chosen = settings or _governance
    if not chosen.hide_denied:
        return True
    return gateway.policy.decide(qualified_name(server, tool)).verdict != "deny"


def refusal_text(tool: str, exc: RunStopped) -> str:
    """What the model reads when the gateway refused an MCP call."""
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


def span_attributes(
    *,
    server: str | None,
    tool: str,
    session_id: str | None = None,
    protocol_version: str | None = None,
    transport: str | None = None,
) -> dict[str, AttributeValue]:
    """The MCP conventions' attributes of a ``tools/call`` span, plus the bounded server name."""
    attributes: dict[str, AttributeValue] = {
        semconv.MCP_METHOD_NAME: semconv.MCP_TOOLS_CALL,
        semconv.MCP_SERVER_NAME: server_label(server),
        semconv.MCP_TOOL: tool,
    }
    if session_id:
        attributes[semconv.MCP_SESSION_ID] = session_id
    if protocol_version:
        attributes[semconv.MCP_PROTOCOL_VERSION] = protocol_version
    if transport:
        attributes[semconv.NETWORK_TRANSPORT] = transport
    return attributes


def with_trace_context(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params._meta`` plus the current trace context (``traceparent``, ``tracestate``), as the conventions say."""
    carrier: dict[str, Any] = dict(meta or {})
    propagate.inject(carrier)
    return carrier


def caller_links(meta: Mapping[str, Any] | None) -> list[Link]:
    """A link to the span whose trace context the client sent in ``params._meta`` (none if it sent none)."""
    if not meta or "traceparent" not in meta:
        return []
    context = trace.get_current_span(propagate.extract(dict(meta))).get_span_context()
    return [Link(context)] if context.is_valid else []


def record_request_id(request_id: object) -> None:
    """Put the JSON-RPC id of the request about to be sent on the current (tools/call) span."""
    trace.get_current_span().set_attribute(semconv.JSONRPC_REQUEST_ID, str(request_id))


def idempotency_key_of(meta: Mapping[str, Any] | None) -> str | None:
    value = (meta or {}).get(IDEMPOTENCY_META_KEY)
    return str(value) if value not in (None, "") else None


def as_call_result(value: Any) -> Any:
    """An MCP ``CallToolResult`` for what the gateway answered (a replayed recording holds plain values)."""
    from mcp import types

    if isinstance(value, types.CallToolResult):
        return value
    if isinstance(value, Mapping) and "content" in value:
        return types.CallToolResult.model_validate(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def error_result_of(result: Any) -> Any:
    """Raise ``McpToolError`` for a result flagged ``isError`` (so the span says ``error``), else return it."""
    if getattr(result, "isError", False):
        raise McpToolError(result)
    return result


async def governed_call(
    *,
    server: str | None,
    tool: str,
    arguments: Mapping[str, Any] | None,
    send: Callable[..., Awaitable[Any]],
    refused: Callable[[str], Any],
    attributes: Mapping[str, AttributeValue],
    run: GovernedRun | None = None,
    scope: AbstractContextManager[Any] | None = None,
    gateway: ToolGateway | None = None,
    settings: McpGovernance | None = None,
    call_id: str | None = None,
    idempotency_key: str | None = None,
    remote_kind: SpanKind = SpanKind.CLIENT,
    links: Sequence[Link] = (),
) -> Any:
    """One MCP ``tools/call`` through the gateway.

    ``send(**arguments)`` performs the call (it may declare ``credentials``); ``refused(text)``
    builds the MCP error result a refused call is answered with.
    """
    chosen = settings or _governance
    if run is None and scope is None:
        run, scope = runtime_run()
    gateway = gateway or gateway_for(run, chosen)
    name = qualified_name(server, tool)
    remote = RemoteTool(
        send, span_name=f"{semconv.MCP_TOOLS_CALL} {name}", attributes=attributes, kind=remote_kind, links=links
    )
    try:
        with scope or nullcontext():
            return as_call_result(
                await gateway.acall(
                    name, arguments, run=run, call_id=call_id, idempotency_key=idempotency_key, remote=remote
                )
            )
    except McpToolError as exc:
        return exc.result
    except ReplayedToolError as exc:  # the recorded call failed: so does the replayed one, as an MCP error
        return refused(f"Tool call failed (replayed): {exc}")
    except (ToolDenied, ApprovalRejected) as exc:
        if chosen.on_denied == "stop":
            stop = getattr(run, "stop", None)
            if callable(stop):
                stop(StopReason.APPROVAL_REJECTED if isinstance(exc, ApprovalRejected) else StopReason.POLICY_DENIED)
            raise
        return refused(refusal_text(name, exc))
