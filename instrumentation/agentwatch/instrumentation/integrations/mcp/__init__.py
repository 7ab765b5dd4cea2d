"""MCP tools behind the ``ToolGateway``: in process, and (``agentwatch mcp-proxy``) in front of MCP servers.

In process::

    from agentwatch.instrumentation.integrations import mcp as aw_mcp

    aw_mcp.instrument(gateway=gateway)   # also done by agentwatch.instrumentation.instrument()

Every ``mcp.ClientSession.call_tool`` (the ``mcp`` SDK, the Agents SDK's MCP servers,
``langchain-mcp-adapters``) then goes through the gateway as ``{server}.{tool}``: policy
(default deny), approvals, budgets, kill switch, idempotency and replay, with a ``tools/call
{server}.{tool}`` span (kind CLIENT) that is also an ``execute_tool`` span, and the trace
context in ``params._meta``. The gateway is the current run's when it has one, else the one
given here; with neither, calls are refused: default deny (``require_gateway=False`` allows and traces them).

Denied tools are listed and refused: the model sees the tool, and a refused call is answered
with an MCP error result (``isError``) saying why, so the model can carry on without it
(``on_denied="stop"`` also stops the run with ``policy_denied``). ``hide_denied=True`` leaves
denied tools out of ``tools/list`` as well (a call naming one is still refused).

``AGENTWATCH_MCP_DISABLED=true`` (or ``instrument(runtimes=[...])`` without ``"mcp"``) opts out.
"""

from __future__ import annotations

from agentwatch.instrumentation.integrations.mcp._client import SessionInfo, govern_session
from agentwatch.instrumentation.integrations.mcp._core import (
    IDEMPOTENCY_META_KEY,
    McpGovernance,
    McpToolError,
    OnDenied,
    calling_server,
    qualified_name,
    server_label,
)
from agentwatch.instrumentation.integrations.mcp._install import (
    DISABLED_ENV,
    McpInstrumentor,
    governs_mcp_calls,
    instrument,
    uninstrument,
)

__all__ = [
    "DISABLED_ENV",
    "IDEMPOTENCY_META_KEY",
    "McpGovernance",
    "McpInstrumentor",
    "McpToolError",
    "OnDenied",
    "SessionInfo",
    "calling_server",
    "govern_session",
    "governs_mcp_calls",
    "instrument",
    "qualified_name",
    "server_label",
    "uninstrument",
]
