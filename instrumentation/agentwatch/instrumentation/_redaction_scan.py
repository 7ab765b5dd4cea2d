"""How ``redaction`` applies its detectors: anchors, found spans, existing markers, and the cheap screen.

A private part of the ``redaction`` leaf (see there): it imports only the standard library and
``_redaction_rules``.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from ._redaction_rules import _CARD_RE, _MARKER_RE, _PRIVATE_KEY_RE, _URL_CREDENTIALS_RE, _Detector

_MIN_SECRET_VALUE_LEN: Final = 4

_Span = tuple[int, int, int, str]  # start, end, rank, kind


def _occurrences(haystack: str, anchors: tuple[str, ...]) -> list[int]:
    positions: list[int] = []
    for anchor in anchors:
        index = haystack.find(anchor)
        while index != -1:
            positions.append(index)
            index = haystack.find(anchor, index + 1)
    return sorted(set(positions)) if len(anchors) > 1 else positions


def _value_span(match: re.Match[str], groups: tuple[str, ...]) -> tuple[int, int]:
    for group in groups:
        start = match.start(group)
        if start != -1:
            return start, match.end(group)
    return match.span()


def _outside_markers(text: str, spans: list[_Span]) -> list[_Span]:
    """``spans`` minus existing markers: a marker is never re-redacted nor cut into."""
    markers = [m.span() for m in _MARKER_RE.finditer(text)]
    if not markers:
        return spans
    ends = [end for _, end in markers]
    kept: list[_Span] = []
    for start, end, rank, kind in spans:
        index = bisect.bisect_right(ends, start)
        position = start
        while index < len(markers) and markers[index][0] < end:
            marker_start, marker_end = markers[index]
            if marker_start > position:
                kept.append((position, marker_start, rank, kind))
            position = max(position, marker_end)
            index += 1
        if position < end:
            kept.append((position, end, rank, kind))
    return kept


def _normalize_secrets(values: Collection[str]) -> tuple[str, ...]:
    if isinstance(values, str):  # a lone string is one secret, not a collection of characters
        values = (values,)
    found: set[str] = set()
    for value in values:
        if len(value) >= _MIN_SECRET_VALUE_LEN:
            found.add(value)
            # the collector sees tool arguments as JSON text, where the value appears escaped
            escaped = json.dumps(value, ensure_ascii=False)[1:-1]
            if escaped != value:
                found.add(escaped)
    return tuple(sorted(found))


def _stringify(value: object) -> str:
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return repr(value)  # str() of bytes warns under -b
    try:
        return str(value)
    except Exception:  # a broken __str__ must not break the span
        return f"<unprintable {type(value).__name__}>"


def _sort_key(value: object) -> tuple[str, str]:
    return type(value).__name__, repr(value)


# --- screening ----------------------------------------------------------------------------------
# Under re.IGNORECASE an ASCII letter in a pattern also matches these four characters (found by
# trying every code point; a test keeps the table complete), and str.lower() turns no other
# non-ASCII character into an ASCII letter. Folding them before lower() therefore makes a plain
# substring test on the folded text see every place where a case-insensitive anchor can match.
_CASE_FOLD: Final = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})
_PEM_LITERAL: Final = "-----BEGIN"
_URL_LITERALS: Final = ("://", "@")
_CARD_MIN_LENGTH: Final = 13  # a brand digit and 12 more: the shortest text the card pattern matches


@dataclass(frozen=True, slots=True)
class _Screen:
    """A necessary condition for some detectors to find anything in a text.

    One of ``literals`` occurs in the text (in its case-folded form when ``ignore_case``); and,
    if ``gates`` is not empty, so does one of the gates; and, if ``cased``, the text is not all
    lower-case (each literal holds an upper-case letter).
    """

    literals: tuple[str, ...]
    gates: tuple[str, ...] = ()
    ignore_case: bool = False
    cased: bool = False


# Characters that are rare in ordinary attribute values: a literal holding one is only looked for
# in a text that holds it too, which is one substring test for a whole group of literals.
_GATE_CHARS: Final = "@-_:=/"


def _screen_key(literal: str, requires: tuple[str, ...], ignore_case: bool) -> tuple[tuple[str, ...], bool, bool]:
    if requires:
        return requires, ignore_case, False
    gate = next((char for char in literal if char in _GATE_CHARS), None)
    if gate is not None:
        return (gate,), ignore_case, False
    return (), ignore_case, not ignore_case and literal != literal.lower()


def _screens(detectors: Sequence[_Detector]) -> tuple[tuple[_Screen, ...], tuple[_Detector, ...], bool]:
    """Screens for ``detectors``, the detectors that must run in full, and whether any is opaque.

    An anchored detector only matches where an anchor occurs (both through the anchored path
    and through the case-insensitive whole-text fallback, since every pattern starts with its
    anchor's text) and only when one of its ``requires`` occurs; the PEM and URL patterns hold
    fixed literals; the card pattern is cheap enough to run as it is (it needs 13 characters
    at least). A custom pattern can match anything, so a redactor with one is opaque: every
    text might hold a secret.
    """
    merged: dict[tuple[tuple[str, ...], bool, bool], list[str]] = {}
    full: list[_Detector] = []
    opaque = False
    for detector in detectors:
        if detector.anchors:
            for anchor in detector.anchors:
                key = _screen_key(anchor, detector.requires, detector.ignore_case)
                merged.setdefault(key, []).append(anchor)
        elif detector.pattern is _PRIVATE_KEY_RE:
            merged.setdefault(_screen_key(_PEM_LITERAL, (), False), []).append(_PEM_LITERAL)
        elif detector.pattern is _URL_CREDENTIALS_RE:
            merged.setdefault(((_URL_LITERALS[1],), False, False), []).append(_URL_LITERALS[0])
        elif detector.pattern is _CARD_RE:
            full.append(detector)
        else:
            opaque = True
    screens = tuple(
        _Screen(tuple(dict.fromkeys(literals)), gates, ignore_case, cased)
        for (gates, ignore_case, cased), literals in merged.items()
    )
    return screens, tuple(full), opaque
