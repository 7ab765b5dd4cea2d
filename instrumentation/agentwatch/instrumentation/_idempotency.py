"""Idempotency keys: the first result per (tool, key), shared by a run's tool calls or by a standalone gateway."""

from __future__ import annotations

import concurrent.futures
import threading
from collections import OrderedDict
from typing import Any


class IdempotencyLedger:
    """First result per (tool, key); a concurrent repeat waits for the first call to finish."""

    def __init__(self, limit: int | None = None) -> None:
        self._entries: OrderedDict[tuple[str, str], concurrent.futures.Future[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def claim(self, tool: str, key: str) -> tuple[bool, concurrent.futures.Future[Any]]:
        """Return (owner, future): the owner runs the tool and resolves the future."""
        with self._lock:
            existing = self._entries.get((tool, key))
            if existing is not None:
                return False, existing
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self._entries[(tool, key)] = future
            if self._limit is not None and len(self._entries) > self._limit:
                self._entries.popitem(last=False)
            return True, future

    def forget(self, tool: str, key: str) -> None:
        # A failed call is not remembered, so the write can be retried with the same key.
        with self._lock:
            self._entries.pop((tool, key), None)
