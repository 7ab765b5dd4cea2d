"""Context variables that carry the current run and step across calls, threads and asyncio tasks.

``contextvars`` are copied into every new asyncio task, so tool calls fanned out with
``asyncio.gather`` inside a step still know their run and step; a new thread starts empty, which
keeps runs on different threads apart.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from agentwatch.instrumentation._run import AgentRun

current_run: Final[ContextVar[AgentRun | None]] = ContextVar("agentwatch_current_run", default=None)
current_step: Final[ContextVar[int | None]] = ContextVar("agentwatch_current_step", default=None)


def get_current_run() -> AgentRun | None:
    """The run the caller is inside, if any."""
    return current_run.get()
