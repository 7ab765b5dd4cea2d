"""What a reader may ask: the store protocol, filters, time values and their validation.

The store is anything with ``query(sql, parameters) -> list[dict]`` (``ClickHouseStore``). User input
never becomes SQL text: every value is checked here and then travels as a ClickHouse server-side
parameter (``{name:Type}``). Times are passed as Unix nanoseconds (``to_ns``) so the result does not
depend on the server's or the client's time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from agentwatch.instrumentation import semconv

MAX_LIMIT: Final = 1000
_MAX_FILTER_LENGTH: Final = 256
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


class StoreReader(Protocol):
    """What the queries need from a store: ``ClickHouseStore.query``."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


class InvalidQuery(ValueError):
    """A filter or time value the caller gave is malformed; the message says what is accepted."""


STORE_EARLIEST: Final = datetime(1900, 1, 1, tzinfo=UTC)
STORE_LATEST: Final = datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC)
"""The span of ClickHouse's DateTime64(9), which every time column of the store uses."""


def _check_store_range(name: str, moment: datetime) -> None:
    if not STORE_EARLIEST <= moment <= STORE_LATEST:
        raise InvalidQuery(
            f"{name} {moment.isoformat()} is outside the times the store can hold "
            f"({STORE_EARLIEST.date().isoformat()} to {STORE_LATEST.date().isoformat()})"
        )


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``15m``/``2h``/``7d``/``1w``/``30s`` ago, or an ISO-8601 time (no zone means UTC) → aware UTC datetime."""
    value = text.strip()
    if not value:
        raise InvalidQuery("empty time: use a duration like 15m, 2h, 7d or an ISO-8601 time")
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        try:
            moment = (now or datetime.now(UTC)) - timedelta(seconds=amount * _UNITS[unit])
        except OverflowError:
            raise InvalidQuery(f"duration {text!r} is too large") from None
        _check_store_range("time", moment)
        return moment
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidQuery(
            f"cannot read time {text!r}: use a duration like 15m, 2h, 7d or ISO-8601 like 2026-11-24T06:00:00Z"
        ) from None
    try:
        moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a valid ISO time whose UTC year is 0
        raise InvalidQuery(f"time {text!r} is outside the times the store can hold") from None
    _check_store_range("time", moment)
    return moment


def check_text(name: str, value: str | None) -> None:
    """A text filter (an id, a name) is absent or 1-256 printable characters; InvalidQuery otherwise."""
    if value is None:
        return
    if not value or len(value) > _MAX_FILTER_LENGTH or any(ord(ch) < 32 for ch in value):
        raise InvalidQuery(f"{name} must be 1-{_MAX_FILTER_LENGTH} printable characters")


def check_window(since: datetime | None, until: datetime | None) -> None:
    """A time window's bounds are timezone-aware and in order; InvalidQuery says which is not."""
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidQuery(f"{name} must be timezone-aware")
        if moment is not None:
            _check_store_range(name, moment)
    if since is not None and until is not None and since > until:
        raise InvalidQuery("since is later than until")


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs to read; every field but ``limit`` is optional. ``tenant`` confines the result to one tenant."""

    agent: str | None = None
    track: str | None = None
    stop_reason: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        for name in ("agent", "track", "stop_reason", "tenant"):
            check_text(name.replace("_", " "), getattr(self, name))
        if self.stop_reason is not None and self.stop_reason not in semconv.STOP_REASONS:
            known = ", ".join(sorted(semconv.STOP_REASONS))
            raise InvalidQuery(f"unknown stop reason {self.stop_reason!r} (one of: {known})")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}")
        check_window(self.since, self.until)


def parse_limit(text: str) -> int:
    """The ``limit`` parameter as an int, with the same message as ``RunFilter``."""
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}") from None


def to_ns(moment: datetime) -> int:
    """Unix nanoseconds of an aware time (how SQL parameters carry times: no time zone involved)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


__all__ = [
    "MAX_LIMIT",
    "STORE_EARLIEST",
    "STORE_LATEST",
    "InvalidQuery",
    "RunFilter",
    "StoreReader",
    "check_text",
    "check_window",
    "parse_limit",
    "parse_since",
    "to_ns",
]
