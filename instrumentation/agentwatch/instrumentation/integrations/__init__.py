"""Runtime integrations: the OpenAI Agents SDK and LangGraph/LangChain, mapped onto the semantic contract.

Each module imports its runtime lazily and exposes ``instrument()`` / ``uninstrument()``; the
package-level ``agentwatch.instrumentation.instrument()`` dispatches to the installed ones.
"""

from __future__ import annotations

__all__: list[str] = []
