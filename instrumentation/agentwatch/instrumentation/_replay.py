"""Replay mode for the gateway: tools answer from a recording instead of running (no side effects).

A recording is the list of tool calls a run made (tool, arguments, result or error). During
replay a call is matched by tool name and canonical arguments, in recorded order, and answered
with the recorded result (disposition ``replayed``). A call that was never recorded is refused
(disposition ``denied``, rule ``replay_unrecorded``) and never executed, so a migrated runtime
that invents a new write cannot reach the real system.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

REPLAY_UNRECORDED_RULE: Final = "replay_unrecorded"


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One tool call as recorded: its arguments and either its result or its error message."""

    tool: str
    args: Mapping[str, Any]
    result: Any = None
    error: str | None = None


class ReplayedToolError(RuntimeError):
    """The recorded call raised; replay raises this with the recorded message."""


def canonical_arguments(args: Mapping[str, Any]) -> str:
    """Arguments as a stable string: key order and whitespace do not matter."""
    return json.dumps(args, sort_keys=True, default=str, separators=(",", ":"))


class Recording:
    """Recorded tool calls, served in order per (tool, arguments); thread-safe."""

    def __init__(self, calls: Iterable[RecordedCall]) -> None:
        self._queues: dict[tuple[str, str], deque[RecordedCall]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.unrecorded: list[tuple[str, Mapping[str, Any]]] = []
        for call in calls:
            self._queues[(call.tool, canonical_arguments(call.args))].append(call)

    def take(self, tool: str, args: Mapping[str, Any]) -> RecordedCall | None:
        """The next recorded call matching ``tool`` and ``args``, or None (and remember the miss)."""
        key = (tool, canonical_arguments(args))
        with self._lock:
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
            self.unrecorded.append((tool, dict(args)))
            return None

    def remaining(self) -> int:
        """Recorded calls that replay has not asked for (the new runtime skipped them)."""
        with self._lock:
            return sum(len(queue) for queue in self._queues.values())
