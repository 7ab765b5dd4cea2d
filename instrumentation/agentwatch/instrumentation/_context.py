"""Context variables that carry the current run and step across calls, threads and asyncio tasks.

``contextvars`` are copied into every new asyncio task, so tool calls fanned out with
``asyncio.gather`` inside a step still know their run and step; a new thread starts empty, which
keeps runs on different threads apart. The run is typed by what its readers need of it (the
gateway's ``GovernedRun``); ``get_current_run()`` gives it back as the ``AgentRun`` it is.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Final

from agentwatch.instrumentation._runapi import GovernedRun

current_run: Final[ContextVar[GovernedRun | None]] = ContextVar("agentwatch_current_run", default=None)
current_step: Final[ContextVar[int | None]] = ContextVar("agentwatch_current_step", default=None)
