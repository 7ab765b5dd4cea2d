"""In-process MCP governance: ``mcp.ClientSession`` and the Agents SDK's MCP servers, patched.

``ClientSession.call_tool`` is the one path every supported client takes to a tool (the
``mcp`` SDK itself, the Agents SDK's ``MCPServerStdio`` / ``MCPServerStreamableHttp`` and
``langchain-mcp-adapters`` all call it), so it is where the gateway goes: each call becomes
``gateway.acall("{server}.{tool}", ...)`` with a ``tools/call {server}.{tool}`` span.
``ClientSession.list_tools`` leaves out denied tools when ``hide_denied`` is on;
``ClientSession.initialize`` remembers the server's announced name and protocol version.
The Agents SDK's servers name the server their calls go to (their ``name``).
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from agentwatch.instrumentation.integrations.mcp import _core, _langchain

__all__ = ["SessionInfo", "govern_session", "patch", "unpatch"]


@dataclass(slots=True)
class SessionInfo:
    """What is known of a client session's server."""

    name: str | None = None
    protocol_version: str | None = None
    session_id: str | None = None
    transport: str | None = None


_sessions: Final[weakref.WeakKeyDictionary[Any, SessionInfo]] = weakref.WeakKeyDictionary()
_originals: list[tuple[object, str, Any]] = []
_agents_patched: list[bool] = []
_adapters_patched: list[bool] = []


def session_info(session: Any) -> SessionInfo:
    info = _sessions.get(session)
    if info is None:
        info = SessionInfo()
        _sessions[session] = info
    return info


def govern_session(
    session: Any, *, server_name: str, session_id: str | None = None, transport: str | None = None
) -> Any:
    """Name the server behind ``session`` (its calls are governed as ``server_name.tool``); returns the session."""
    info = session_info(session)
    info.name = server_name
    info.session_id = session_id or info.session_id
    info.transport = transport or info.transport
    return session


def _server_of(session: Any) -> str | None:
    configured = _core.server_name_var.get()
    if configured:
        return configured
    info = _sessions.get(session)
    return info.name if info is not None else None


def _call_tool(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def call_tool(
        self: Any, name: str, arguments: dict[str, Any] | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        from mcp import types

        patch_agents_servers()  # the SDK may have been imported after instrument()
        server = _server_of(self)
        info = _sessions.get(self) or SessionInfo()
        meta = kwargs.pop("meta", None)

        async def send(**call_arguments: Any) -> Any:
            traced_meta = _core.with_trace_context(meta)
            _core.record_request_id(getattr(self, "_request_id", ""))  # the id send_request is about to use
            result = await original(self, name, call_arguments, *args, meta=traced_meta, **kwargs)
            return _core.error_result_of(result)

        def refused(text: str) -> Any:
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)

        attributes = _core.span_attributes(
            server=server,
            tool=name,
            session_id=info.session_id,
            protocol_version=info.protocol_version,
            transport=info.transport,
        )
        return await _core.governed_call(
            server=server,
            tool=name,
            arguments=arguments,
            send=send,
            refused=refused,
            attributes=attributes,
            idempotency_key=_core.idempotency_key_of(meta),
        )

    return call_tool


def _list_tools(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def list_tools(self: Any, *args: Any, **kwargs: Any) -> Any:
        patch_agents_servers()  # the Agents SDK lists an MCP server's tools before it calls one
        result = await original(self, *args, **kwargs)
        settings = _core.governance()
        if not settings.hide_denied:
            return result
        server = _server_of(self)
        run, _ = _core.runtime_run()
        gateway = _core.gateway_for(run, settings)
        listed = [tool for tool in result.tools if _core.is_listed(gateway, server, tool.name, settings)]
        return result.model_copy(update={"tools": listed})

    return list_tools


def _initialize(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def initialize(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        info = session_info(self)
        info.name = info.name or getattr(getattr(result, "serverInfo", None), "name", None)
        info.protocol_version = str(getattr(result, "protocolVersion", "") or "") or None
        return result

    return initialize


def _naming(original: Callable[..., Any]) -> Callable[..., Any]:
    """An Agents SDK server method whose session calls go to the server named ``self.name``."""

    @functools.wraps(original)
    async def named(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _core.calling_server(getattr(self, "name", None)):
            return await original(self, *args, **kwargs)

    return named


def _replace(owner: object, attribute: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = owner.__dict__[attribute] if isinstance(owner, type) else getattr(owner, attribute)
    _originals.append((owner, attribute, original))
    setattr(owner, attribute, wrap(original))


def patch() -> None:
    """Route every ``ClientSession.call_tool`` through the gateway (and name the Agents SDK's servers)."""
    if _originals:
        patch_agents_servers()
        return
    from mcp import ClientSession

    _replace(ClientSession, "call_tool", _call_tool)
    _replace(ClientSession, "list_tools", _list_tools)
    _replace(ClientSession, "initialize", _initialize)
    patch_agents_servers()


def patch_agents_servers() -> None:
    """Name the Agents SDK's MCP servers and langchain-mcp-adapters' tools, once loaded.

    Checked at ``instrument()`` and again before each listing and call: importing those
    libraries here would cost seconds in processes that never use them.
    """
    if not _originals:
        return
    adapters = sys.modules.get("langchain_mcp_adapters.tools")
    if adapters is not None and not _adapters_patched:
        _adapters_patched.append(True)
        _replace(adapters, "convert_mcp_tool_to_langchain_tool", _langchain.convert_function_wrapper())
    if _agents_patched or "agents" not in sys.modules:
        return
    _agents_patched.append(True)
    try:
        from agents.mcp import server as agents_server
    except ImportError:
        return
    base = getattr(agents_server, "_MCPServerWithClientSession", None)
    if not isinstance(base, type):
        return
    # the base and every server class of the SDK that overrides a method (MCPServerStreamableHttp does)
    classes = [value for value in vars(agents_server).values() if isinstance(value, type) and issubclass(value, base)]
    for owner in classes:
        for attribute in ("call_tool", "list_tools"):
            if attribute in owner.__dict__:
                _replace(owner, attribute, _naming)


def unpatch() -> None:
    """Restore what ``patch()`` replaced."""
    _agents_patched.clear()
    _adapters_patched.clear()
    while _originals:
        owner, attribute, original = _originals.pop()
        setattr(owner, attribute, original)


def patched() -> bool:
    return bool(_originals)
