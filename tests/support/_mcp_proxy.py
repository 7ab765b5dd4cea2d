"""The proxy under test: its config, a loopback server for it in a thread, the SDK's client for it."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import uvicorn
from _mcp_servers import SERVER_NAME
from _ports import free_port
from _telemetry import Telemetry
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.context import RequestContext
from mcp.types import ElicitRequestParams, ElicitResult

from agentwatch.instrumentation import AgentWatchConfig, load_config
from agentwatch.instrumentation.integrations.mcp.proxy import McpProxy

READ = f"{SERVER_NAME}.lookup_order"
WRITE = f"{SERVER_NAME}.close_ticket"
TOKENS = {"tok-acme": "acme", "tok-globex": "globex"}
UPSTREAM_SECRETS = {"acme": "Bearer upstream-secret-acme", "globex": "Bearer upstream-secret-globex"}


def proxy_config(upstream: dict[str, Any], **mcp: Any) -> AgentWatchConfig:
    """The seed's config shape, plus the mcp section."""
    return load_config(
        {
            "architecture": {"tool_gateway": "owned", "runtime": "managed_or_custom"},
            "budgets": {"max_steps": 25, "max_tool_calls": 4},
            "approvals": {"required_for": [WRITE]},
            "logging": {"tool_calls": True, "stop_reasons": True, "capture_content": True},
            "tools": {"allow": [READ]},
            "mcp": {"upstreams": {SERVER_NAME: upstream}, "tokens": TOKENS, **mcp},
        }
    )


@contextmanager
def serving(proxy: McpProxy) -> Iterator[str]:
    """The proxy's Streamable HTTP app on a loopback port, in a thread of its own."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(proxy.asgi_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the proxy did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(15)


@asynccontextmanager
async def client(url: str, token: str, *, approve: bool | None = None) -> AsyncIterator[ClientSession]:
    """The SDK's own client; ``approve`` answers the proxy's approval elicitations (None: no elicitation support)."""

    async def elicitation(context: RequestContext[ClientSession, Any], params: ElicitRequestParams) -> ElicitResult:
        return ElicitResult(action="accept", content={"approve": bool(approve)})

    async with (
        httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write, elicitation_callback=elicitation if approve is not None else None) as session,
    ):
        await session.initialize()
        yield session


def text_of(result: Any) -> str:
    return " ".join(getattr(item, "text", "") for item in result.content)


def make_proxy(telemetry: Telemetry, config: AgentWatchConfig, **kwargs: Any) -> McpProxy:
    return McpProxy(config, tracer_provider=telemetry.provider, settings=telemetry.settings, **kwargs)
