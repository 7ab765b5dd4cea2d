"""What the converter remembers between requests: strings a redactor has proven clean, and rendered attributes.

Most values of agent spans repeat (agent, tenant, model and tool names, run ids within a run),
so each ``Redactor`` gets a ``_Scrubber`` with bounded memos, shared by every conversion that
uses it, and conversions without redaction share ``_PLAIN_MEMOS``. The converter reads and fills
them; ``_scrubber`` and ``_memo`` hand them out.
"""

from __future__ import annotations

import threading
import weakref
from typing import Final, TypeAlias

from agentwatch.instrumentation.redaction import REDACTED, Redactor

__all__: list[str] = []

_MEMO_MAX_CHARS: Final = 256  # longer values rarely repeat; hashing them would cost more than it saves
_MEMO_MAX_ENTRIES: Final = 1 << 15  # per memo: tens of MB at worst, a few MB for real workloads
_SECRET_MARKER: Final = f"{REDACTED[:-1]}:secret]"  # what Redactor.redact_value puts under a sensitive key

_Memo: TypeAlias = dict[bytes, tuple[str, str, str]]  # KeyValue bytes -> key, value, '"key":"value"'


class _Scrubber:
    """One redactor and its memos: strings proven clean, and keys already looked at.

    Shared by every conversion that uses the redactor. The memos only hold facts about strings,
    so concurrent use is safe, and a full memo is simply emptied (an attacker sending only
    unique values costs us the memo's benefit, never correctness).
    """

    __slots__ = ("__weakref__", "attributes", "clean", "keys", "redactor")

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.clean: set[str] = set()
        self.keys: dict[str, tuple[str, bool]] = {}
        self.attributes: dict[tuple[int, int], _Memo] = {}  # rendered attributes, per (value, key) length cap

    def text(self, text: str) -> str:
        """``redactor.redact_text(text)``, memoized for short clean text."""
        short = len(text) <= _MEMO_MAX_CHARS
        if short and text in self.clean:
            return text
        redactor = self.redactor
        if redactor.might_contain_secret(text):
            redacted = redactor.redact_text(text)
            if redacted is not text:
                return redacted
        if short:
            if len(self.clean) >= _MEMO_MAX_ENTRIES:
                self.clean.clear()
            self.clean.add(text)
        return text

    def key(self, key: str) -> tuple[str, bool]:
        """The key as stored (redacted, as ``redact_value`` does keys) and whether its value is hidden."""
        info = self.keys.get(key)
        if info is None:
            info = (self.text(key), self.redactor.is_sensitive_key(key))
            if len(key) <= _MEMO_MAX_CHARS:
                if len(self.keys) >= _MEMO_MAX_ENTRIES:
                    self.keys.clear()
                self.keys[key] = info
        return info

    def raw(self, raw: object) -> object:
        """``redactor.redact_value(raw)``; a flat list of scalars is done string by string, memoized."""
        if isinstance(raw, list) and all(item is None or isinstance(item, str | int | float) for item in raw):
            return [self.text(item) if isinstance(item, str) else item for item in raw]
        return self.redactor.redact_value(raw)


_SCRUBBERS: Final[weakref.WeakKeyDictionary[Redactor, _Scrubber]] = weakref.WeakKeyDictionary()
_PLAIN_MEMOS: Final[dict[tuple[int, int], _Memo]] = {}  # rendered attributes without redaction, per length caps
_MEMOS_LOCK: Final = threading.Lock()


def _scrubber(redactor: Redactor) -> _Scrubber:
    with _MEMOS_LOCK:
        scrubber = _SCRUBBERS.get(redactor)
        if scrubber is None:
            scrubber = _SCRUBBERS[redactor] = _Scrubber(redactor)
        return scrubber


def _memo(scrubber: _Scrubber | None, caps: tuple[int, int]) -> _Memo:
    memos = _PLAIN_MEMOS if scrubber is None else scrubber.attributes
    with _MEMOS_LOCK:
        memo = memos.get(caps)
        if memo is None:
            memo = memos[caps] = {}
        return memo
