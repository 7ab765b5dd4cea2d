"""``RemoteTool``: a tool whose implementation lives in another process (an MCP server).

The gateway normally runs the implementation registered under the tool's name. A call that
carries a ``RemoteTool`` runs its ``function`` instead (after the same budget, kill-switch,
policy, idempotency, approval and credentials checks) and shapes the tool span as the remote
protocol's conventions ask: another span name, span kind ``CLIENT`` and extra attributes
(``tools/call github.create_issue``, ``mcp.method.name``). The span stays an ``execute_tool``
span with a disposition and an outcome, so the collector counts it like any tool call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import AttributeValue

__all__ = ["RemoteTool"]


@dataclass(frozen=True, slots=True)
class RemoteTool:
    """How the gateway reaches and records a tool served elsewhere.

    ``function`` is called with the arguments as keywords, like a registered tool (it may be
    async; declaring ``credentials`` or ``approval_token`` gets the scoped credentials and the
    approver's token). ``span_name`` replaces ``execute_tool {tool}``; ``attributes`` are added
    to the span at its start; ``links`` point at related spans (the caller's span in another trace).
    """

    function: Callable[..., Any]
    span_name: str | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    kind: SpanKind = SpanKind.CLIENT
    links: Sequence[Link] = ()
