"""Replay of recorded runs on another runtime, with the gateway serving recorded tool results, and
the parity report.
"""

from __future__ import annotations

__all__: list[str] = []
