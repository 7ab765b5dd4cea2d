"""The collector process: wiring of receivers, spool, writer, metrics, drift analyzer and read API,
and its HTTP listeners.
"""

from __future__ import annotations

__all__: list[str] = []
