"""The ``agentwatch`` command line: every subcommand and the console script's ``main``."""

from __future__ import annotations

__all__: list[str] = []
