"""Connections to the upstream MCP servers: one per upstream and credentials (so per tenant when they differ).

Each connection lives in its own task (the ``mcp`` SDK's transports hold anyio task groups, which
must be entered and left in one task), started on first use in the proxy's task group and closed
when the proxy stops. The proxy sends ``tools/call`` with ``send_request`` rather than
``ClientSession.call_tool``, so the in-process integration (if this process has it) never governs
the same call a second time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx

from agentwatch.instrumentation.integrations.mcp.proxy._settings import Upstream

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from mcp import ClientSession

logger: Final = logging.getLogger("agentwatch.instrumentation")

_Key = tuple[str, tuple[tuple[str, str], ...]]


class UpstreamUnavailable(Exception):
    """The upstream could not be reached (or initialized)."""


class _Connection:
    def __init__(self, upstream: Upstream, credentials: Mapping[str, str]) -> None:
        self.upstream = upstream
        self.credentials = dict(credentials)
        self.ready = anyio.Event()
        self.closing = anyio.Event()
        self.session: ClientSession | None = None
        self.protocol_version: str | None = None
        self.error: BaseException | None = None

    async def run(self) -> None:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client

        upstream = self.upstream
        try:
            async with contextlib.AsyncExitStack() as stack:
                streams: Any
                if upstream.url is not None:
                    client = await stack.enter_async_context(
                        httpx.AsyncClient(
                            headers={**upstream.headers, **self.credentials},
                            timeout=httpx.Timeout(30.0, read=300.0),
                            follow_redirects=True,
                        )
                    )
                    streams = await stack.enter_async_context(streamable_http_client(upstream.url, http_client=client))
                else:
                    assert upstream.command is not None
                    parameters = StdioServerParameters(
                        command=upstream.command, args=list(upstream.args), env={**upstream.env, **self.credentials}
                    )
                    streams = await stack.enter_async_context(stdio_client(parameters))
                session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
                result = await session.initialize()
                self.protocol_version = str(result.protocolVersion)
                self.session = session
                self.ready.set()
                await self.closing.wait()
        except Exception as exc:
            self.error = exc
            logger.warning("MCP upstream %s: %s: %s", upstream.name, type(exc).__name__, exc)
        finally:
            self.session = None
            self.ready.set()


class UpstreamPool:
    """The proxy's upstream sessions, opened on first use."""

    def __init__(self, task_group: TaskGroup) -> None:
        self._task_group = task_group
        self._connections: dict[_Key, _Connection] = {}
        self._lock = anyio.Lock()

    async def connection(self, upstream: Upstream, credentials: Mapping[str, str]) -> _Connection:
        key: _Key = (upstream.name, tuple(sorted(credentials.items())))
        async with self._lock:
            connection = self._connections.get(key)
            if connection is None or connection.error is not None or connection.closing.is_set():
                connection = _Connection(upstream, credentials)
                self._connections[key] = connection
                self._task_group.start_soon(connection.run)
        await connection.ready.wait()
        if connection.session is None:
            reason = connection.error or "closed"
            raise UpstreamUnavailable(f"upstream {upstream.name} is unavailable ({type(reason).__name__})")
        return connection

    async def session(self, upstream: Upstream, credentials: Mapping[str, str]) -> ClientSession:
        connection = await self.connection(upstream, credentials)
        assert connection.session is not None
        return connection.session

    def close(self) -> None:
        for connection in self._connections.values():
            connection.closing.set()
        self._connections.clear()
