"""``agentwatch mcp-proxy``: an MCP server in front of MCP servers, so any MCP client is governed.

Configured from the agentwatch YAML (the seed's sections plus ``mcp``; see ``_settings``)::

    agentwatch mcp-proxy --config agentwatch.yaml            # Streamable HTTP on mcp.listen
    agentwatch mcp-proxy --config agentwatch.yaml --stdio    # one client over stdin/stdout

Spans go where ``configure(config=...)`` sends them: the standard ``OTEL_*`` variables
(``OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318``).
"""

from __future__ import annotations

from agentwatch.instrumentation.integrations.mcp.proxy._cli import main
from agentwatch.instrumentation.integrations.mcp.proxy._server import RUNTIME, McpProxy
from agentwatch.instrumentation.integrations.mcp.proxy._settings import Listen, ProxySettings, Upstream, proxy_settings

__all__ = ["RUNTIME", "Listen", "McpProxy", "ProxySettings", "Upstream", "main", "proxy_settings"]
