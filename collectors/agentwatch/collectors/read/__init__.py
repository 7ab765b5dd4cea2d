"""Reading the store: runs, traces and statistics as SQL over ClickHouse, and their text rendering."""

from __future__ import annotations

__all__: list[str] = []
