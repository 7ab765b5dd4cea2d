"""``python -m agentwatch.instrumentation.integrations.mcp.proxy --config FILE``: ``agentwatch mcp-proxy``."""

from __future__ import annotations

from agentwatch.instrumentation.integrations.mcp.proxy import main

raise SystemExit(main(prog="python -m agentwatch.instrumentation.integrations.mcp.proxy"))
