"""``instrument()`` / ``uninstrument()`` of the MCP integration, and its instrumentor."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Final

from agentwatch.instrumentation.integrations.mcp import _client, _core
from agentwatch.instrumentation.integrations.mcp._core import McpGovernance, OnDenied

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from agentwatch.instrumentation._gateway import ToolGateway

DISABLED_ENV: Final = "AGENTWATCH_MCP_DISABLED"


def instrument(
    *,
    tracer_provider: TracerProvider | None = None,
    gateway: ToolGateway | None = None,
    on_denied: OnDenied = "refuse",
    hide_denied: bool = False,
    require_gateway: bool = True,
    **_options: Any,
) -> None:
    """Govern every MCP tool call of this process (idempotent; a second call updates the settings).

    Options meant for the runtime adapters (``budget``, ``tenant_id``, ...) are accepted and
    ignored: MCP calls take the budget and tenant of the run they are made in.
    """
    if os.environ.get(DISABLED_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return
    if on_denied not in ("refuse", "stop"):
        raise ValueError(f"on_denied must be 'refuse' or 'stop', got {on_denied!r}")
    _core.set_governance(
        McpGovernance(gateway=gateway, on_denied=on_denied, hide_denied=hide_denied, require_gateway=require_gateway)
    )
    _client.patch()


def uninstrument() -> None:
    """Stop governing MCP calls: restore the patched client classes and forget the settings."""
    _client.unpatch()
    _core.set_governance(McpGovernance())


def governs_mcp_calls() -> bool:
    """True while MCP tool calls go through the gateway (the runtime integrations then leave them to it)."""
    return _client.patched()


class McpInstrumentor:
    """``instrument()`` in the shape OpenTelemetry's auto-instrumentation loads."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("mcp >= 1.20",)

    def instrument(self, **kwargs: Any) -> None:
        instrument(**kwargs)

    def uninstrument(self, **kwargs: Any) -> None:
        uninstrument()
