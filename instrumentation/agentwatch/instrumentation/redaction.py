"""Scrubbing of secrets and personal data from content before it is put on a span.

A ``Redactor`` finds API keys and tokens of the common vendors, AWS credentials, bearer tokens,
JWTs, PEM private keys, payment card numbers (Luhn-checked), e-mail addresses, credentials in
URLs and the values of sensitive ``key=value`` pairs, and replaces each with ``[REDACTED:<kind>]``;
it also walks structured values, hiding everything under a sensitive key, and turns any value
into a bounded span attribute (redacted first, truncated after, so a secret cut at the boundary
cannot leak its prefix). Redaction is deterministic and idempotent: every detector reads the
whole text, overlapping findings merge into one marker, markers are never redacted again, and a
further pass catches what only shows once a neighbour is hidden. The in-process instrumentation
and the collector (which scrubs spans from other SDKs) both use it, so the common path is kept
cheap: most precompiled regexes are tried only where a literal anchor (``eyJ``, ``@``,
``password``...) occurs, and text without findings comes back as the same object. For callers
that scrub a lot of short, mostly clean values (the collector), ``might_contain_secret`` is a
cheaper screen derived from the same detectors: when it says no, ``redact_text`` would return the
text unchanged. This module is a leaf: it imports only the standard library and its own private
parts, ``_redaction_rules`` (the detectors) and ``_redaction_scan`` (applying them, the screen).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import ClassVar, Final

# Relative imports: these private modules are parts of this leaf, split out for size, not other
# agentwatch modules (a leaf imports nothing from agentwatch; tests hold the whole family to that).
from ._redaction_rules import (
    _BUILTIN_DETECTORS,
    _DEFAULT_KEY_SUFFIXES,
    _DEFAULT_KV,
    _DEFAULT_SENSITIVE_KEYS,
    _MARKER_RE,
    _RANK_CUSTOM,
    _RANK_SECRET,
    _SECRET_MARKER,
    DEFAULT_MAX_LENGTH,
    REDACTED,
    _Detector,
    _kv_detectors,
    _marker,
    luhn_valid,
)
from ._redaction_scan import (
    _CARD_MIN_LENGTH,
    _normalize_secrets,
    _occurrences,
    _outside_markers,
    _screens,
    _sort_key,
    _Span,
    _stringify,
    _value_span,
)
from ._redaction_scan import _CASE_FOLD as _CASE_FOLD  # noqa: PLC0414  # re-exported: a test checks the table

__all__ = ["DEFAULT_MAX_LENGTH", "REDACTED", "Redactor", "luhn_valid", "redact_text"]

# A pass can create a new finding only by changing the context of its neighbours (a marker is not
# a word character, so ``\b``-style boundaries may start to hold); realistic text settles in two
# passes, and the cap bounds the worst case of adversarial input.
_MAX_PASSES: Final = 4
_MAX_DEPTH: Final = 64
_MAX_INT_BITS: Final = 10_000  # json/str refuse ints beyond ~4300 digits; never raise on one
_MARKER_SCAN: Final = 64  # longer than any marker: how far back a truncation looks for one to keep whole
_TOO_DEEP: Final = "…[nested too deep]"
_CYCLE: Final = "…[cycle]"


class Redactor:
    """Finds and hides secrets and personal data in text and structured values.

    Kinds of finding (the ``<kind>`` of ``[REDACTED:<kind>]``):

    * ``private_key``: a PEM block ``-----BEGIN ... PRIVATE KEY-----`` through its END line
      (also with ``\\n`` escapes inside a JSON string; a block without END hides its body).
    * ``jwt``: three or more base64url segments starting ``eyJ``.
    * ``api_key``: OpenAI ``sk-``/``sk-proj-``, Anthropic ``sk-ant-``, Google ``AIza``, GitHub
      ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``, Slack ``xox?-``/``xapp-``,
      Stripe ``sk_live_``/``rk_live_`` (and ``_test_``) and ``whsec_``.
    * ``aws_key``: an access key id ``AKIA``/``ASIA`` + 16; ``aws_secret``: a 40-character secret
      access key after a label such as ``aws_secret_access_key=`` or ``"SecretAccessKey": ``.
    * ``bearer``: the token after ``Bearer`` (the word stays).
    * ``url_credentials``: ``user:password`` in ``scheme://user:password@host`` (host stays).
    * ``card``: 13-19 digits starting 2-6, contiguous or grouped 4-4-4-4(-3), 4-6-5 or 4-6-4 with
      spaces or hyphens, that pass the Luhn check.
    * ``email``: an e-mail address (not ``name@2x.png``).
    * ``secret``: the value of a sensitive key, in text (``password=...``, ``"client_secret": "..."``,
      ``Authorization: Basic ...``, a whole ``Cookie:`` header) and in mappings; also every
      occurrence of a ``secret_values`` string.
    * ``custom``: a match of one of ``extra_patterns`` (its group ``value`` if it has one).

    ``sensitive_keys`` replaces the default list (``Redactor.DEFAULT_SENSITIVE_KEYS``); pass
    ``(*Redactor.DEFAULT_SENSITIVE_KEYS, "ssn")`` to extend it. A key is sensitive when, with
    case, ``-``, ``_``, ``.`` and spaces ignored, it ends with one of the names: ``db_password``
    and ``X-Api-Key`` are, ``max_tokens``, ``session_id`` and ``author`` are not.

    Redaction is deterministic and idempotent (``redact_text(redact_text(t)) == redact_text(t)``).
    Instances are immutable and safe to share between threads.
    """

    DEFAULT_SENSITIVE_KEYS: ClassVar[tuple[str, ...]] = _DEFAULT_SENSITIVE_KEYS

    def __init__(
        self,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        extra_patterns: Sequence[str] = (),
        sensitive_keys: Sequence[str] | None = None,
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        self._max_length = max_length
        if sensitive_keys is None:
            kv, suffixes = _DEFAULT_KV, _DEFAULT_KEY_SUFFIXES
        else:
            if isinstance(sensitive_keys, str):
                raise TypeError("sensitive_keys must be a sequence of names, not one string")
            kv, suffixes = _kv_detectors(sensitive_keys)
        self._key_suffixes = suffixes
        detectors = [*_BUILTIN_DETECTORS, *kv]
        if isinstance(extra_patterns, str):
            raise TypeError("extra_patterns must be a sequence of regexes, not one string")
        for source in extra_patterns:
            try:
                pattern = re.compile(source)
            except re.error as exc:
                raise ValueError(f"extra pattern {source!r} is not a valid regex: {exc}") from exc
            groups = ("value",) if "value" in pattern.groupindex else ()
            detectors.append(_Detector("custom", _RANK_CUSTOM, pattern, groups=groups))
        self._detectors = tuple(detectors)
        self._screens, self._screen_detectors, self._opaque = _screens(self._detectors)

    @property
    def max_length(self) -> int:
        """Characters an attribute keeps before its truncation marker."""
        return self._max_length

    # --- text --------------------------------------------------------------------------------
    def redact_text(self, text: str, *, secret_values: Collection[str] = ()) -> str:
        """``text`` with every finding replaced by ``[REDACTED:<kind>]``.

        ``secret_values`` are exact strings (a scoped credential handed to a tool, say) hidden
        wherever they occur, JSON-escaped occurrences included; values shorter than 4 characters
        are ignored, as hiding them would shred ordinary text. Text without findings is returned
        as the same object.
        """
        return self._redact(text, _normalize_secrets(secret_values))

    def might_contain_secret(self, text: str) -> bool:
        """False only when ``redact_text(text)`` (without ``secret_values``) returns ``text`` as is.

        A cheap screen built from the same detectors: a few substring tests for their anchors and
        literals (case-folded where the detector ignores case), gated like the detectors are, and
        the card pattern; True means "run ``redact_text``", not "there is a secret". A redactor
        with ``extra_patterns`` always answers True. The screen only looks for substrings and
        for card numbers bounded by non-word characters, so it is monotone: if it is False for
        ``"\\x00".join(parts)`` it is False for every part, which lets a caller screen many
        values at once.
        """
        if self._opaque:
            return True
        if not text:
            return False
        folded: str | None = None
        lower_only: bool | None = None
        for screen in self._screens:
            if screen.gates:
                for gate in screen.gates:
                    if gate in text:
                        break
                else:
                    continue
            if screen.cased:
                if lower_only is None:
                    lower_only = text.islower()
                if lower_only:
                    continue
            haystack = text
            if screen.ignore_case:
                if folded is None:
                    folded = text.lower() if text.isascii() else text.translate(_CASE_FOLD).lower()
                haystack = folded
            for literal in screen.literals:
                if literal in haystack:
                    return True
        if len(text) < _CARD_MIN_LENGTH:
            return False
        for detector in self._screen_detectors:
            validate = detector.validate
            for match in detector.pattern.finditer(text):
                if validate is None or validate(text, match):
                    return True
        return False

    def _redact(self, text: str, secrets: tuple[str, ...]) -> str:
        if not text:
            return text
        result = self._redact_once(text, secrets)
        if result is text:
            return text
        for _ in range(_MAX_PASSES - 1):
            again = self._redact_once(result, secrets)
            if again is result:
                break
            result = again
        return result

    def _find(self, text: str, secrets: tuple[str, ...]) -> list[_Span]:
        spans: list[_Span] = []
        lower: str | None = None
        gates: dict[tuple[str, ...], bool] = {}
        for detector in self._detectors:
            if detector.requires:
                gate = gates.get(detector.requires)
                if gate is None:
                    gate = gates[detector.requires] = any(r in text for r in detector.requires)
                if not gate:
                    continue
            if not detector.anchors:
                matches: Iterable[re.Match[str]] = detector.pattern.finditer(text)
            else:
                haystack = text
                if detector.ignore_case:
                    if lower is None:
                        lower = text.lower()
                    haystack = lower
                if len(haystack) != len(text):  # lower() lengthened a character: offsets no longer agree
                    matches = detector.pattern.finditer(text)
                else:
                    starts = _occurrences(haystack, detector.anchors)
                    if not starts:
                        continue
                    matches = self._anchored(detector, text, starts)
            validate = detector.validate
            for match in matches:
                if validate is not None and not validate(text, match):
                    continue
                start, end = _value_span(match, detector.groups)
                if start < end:
                    spans.append((start, end, detector.rank, detector.kind))
        for value in secrets:
            index = text.find(value)
            while index != -1:
                spans.append((index, index + len(value), _RANK_SECRET, "secret"))
                index = text.find(value, index + 1)  # overlapping occurrences too: "abab" in "ababab"
        return spans

    @staticmethod
    def _anchored(detector: _Detector, text: str, starts: Iterable[int]) -> Iterator[re.Match[str]]:
        """Matches tried at each anchor; like ``finditer``, an anchor inside the last match is skipped
        (the payload of a JWT starts with ``eyJ`` too)."""
        match = detector.pattern.match
        chars = detector.back_chars
        limit_back = detector.back_limit
        covered = -1
        for anchor in starts:
            if anchor < covered:
                continue
            start = anchor
            if chars:
                limit = max(0, anchor - limit_back)
                while start > limit and text[start - 1] in chars:
                    start -= 1
                if start == anchor:
                    continue
            found = match(text, start)
            if found is not None:
                covered = found.end()
                yield found

    def _redact_once(self, text: str, secrets: tuple[str, ...]) -> str:
        spans = self._find(text, secrets)
        if spans and "[REDACTED" in text:
            spans = _outside_markers(text, spans)
        if not spans:
            return text
        spans.sort()
        # Overlapping findings become one marker (a partial overlap would otherwise leave the tail
        # of one of them in clear); its kind is the longest finding's, then the most specific one's.
        pieces: list[str] = []
        position = 0
        group_start, group_end, group_rank, group_kind = spans[0]
        best = (group_start - group_end, group_rank)
        for start, end, rank, kind in spans[1:]:
            if start < group_end:
                group_end = max(group_end, end)
                if (start - end, rank) < best:
                    best, group_kind = (start - end, rank), kind
                continue
            pieces.append(text[position:group_start])
            pieces.append(_marker(group_kind))
            position = group_end
            group_start, group_end, group_kind, best = start, end, kind, (start - end, rank)
        pieces.append(text[position:group_start])
        pieces.append(_marker(group_kind))
        pieces.append(text[group_end:])
        return "".join(pieces)

    # --- structures --------------------------------------------------------------------------
    def is_sensitive_key(self, key: str) -> bool:
        """Whether the value under ``key`` is hidden whole (``db_password``, ``X-Api-Key``, ``Cookie``).

        With case, ``-``, ``_``, ``.`` and spaces ignored, the key ends with one of the sensitive
        key names; ``redact_value`` and ``to_attribute`` hide such values as ``[REDACTED:secret]``.
        """
        return self._is_sensitive_key(key)

    def _is_sensitive_key(self, key: str) -> bool:
        compact = key.lower().replace("-", "").replace("_", "").replace(".", "").replace(" ", "")
        return compact.endswith(self._key_suffixes)

    def _is_sensitive_label(self, label: object) -> bool:
        if isinstance(label, bytes):  # ASGI and raw HTTP header names
            label = label.decode("latin-1")
        return isinstance(label, str) and self._is_sensitive_key(label)

    def _names_sensitive_value(self, mapping: Mapping[object, object]) -> bool:
        """``{"name": "Authorization", "value": ...}``: header and env-var lists hide ``value``."""
        if "value" not in mapping:
            return False
        return any(self._is_sensitive_label(mapping.get(field)) for field in ("name", "key", "header"))

    def redact_value(self, value: object, *, secret_values: Collection[str] = ()) -> object:
        """A redacted copy of ``value``; the input is not modified.

        Mappings (returned as ``dict``), lists, tuples and sets are walked. Under a sensitive key,
        under ``value`` next to a ``name``/``key``/``header`` naming one, and as the second item of
        a 2-tuple whose first names one (header lists: ``("Authorization", "Basic ...")``), the
        value becomes ``[REDACTED:secret]`` whatever its type. Strings, keys included, go through
        ``redact_text`` (two keys redacted to the same text collapse into one). Other objects are
        kept as they are. A reference cycle becomes ``…[cycle]`` and nesting deeper than 64
        levels ``…[nested too deep]``.
        """
        return self._walk(value, _normalize_secrets(secret_values), 0, set(), for_json=False)

    def _walk(self, value: object, secrets: tuple[str, ...], depth: int, active: set[int], *, for_json: bool) -> object:
        if isinstance(value, str):
            return self._redact(value, secrets)
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            if for_json and value.bit_length() > _MAX_INT_BITS:
                return f"<int of {value.bit_length()} bits>"
            return value
        if not isinstance(value, Mapping | list | tuple | set | frozenset):
            return self._redact(_stringify(value), secrets) if for_json else value
        if depth >= _MAX_DEPTH:
            return _TOO_DEEP
        identity = id(value)
        if identity in active:
            return _CYCLE
        active.add(identity)
        try:
            if isinstance(value, Mapping):
                return self._walk_mapping(value, secrets, depth, active, for_json=for_json)
            items = [self._walk(item, secrets, depth + 1, active, for_json=for_json) for item in value]
            if isinstance(value, tuple) and len(items) == 2 and self._is_sensitive_label(value[0]):
                items[1] = _SECRET_MARKER
            if isinstance(value, set | frozenset):
                if for_json:
                    return sorted(items, key=_sort_key)  # set order varies between processes
                return frozenset(items) if isinstance(value, frozenset) else set(items)
            if isinstance(value, tuple) and not for_json:
                return tuple(items)
            return items
        finally:
            active.discard(identity)

    def _walk_mapping(
        self, value: Mapping[object, object], secrets: tuple[str, ...], depth: int, active: set[int], *, for_json: bool
    ) -> dict[object, object]:
        hide_value = self._names_sensitive_value(value)
        result: dict[object, object] = {}
        for key, item in value.items():
            new_key: object
            if isinstance(key, str):
                new_key = self._redact(key, secrets)
                if self._is_sensitive_key(key) or (hide_value and key == "value"):
                    result[new_key] = _SECRET_MARKER
                    continue
            elif key is None or isinstance(key, bool | int | float):
                new_key = key
            elif for_json:
                new_key = self._redact(_stringify(key), secrets)
            elif isinstance(key, tuple):
                new_key = self._walk(key, secrets, depth + 1, active, for_json=False)
            else:
                new_key = key
            result[new_key] = self._walk(item, secrets, depth + 1, active, for_json=for_json)
        return result

    # --- attributes --------------------------------------------------------------------------
    def to_attribute(self, value: object, *, secret_values: Collection[str] = ()) -> str:
        """``value`` as a redacted, bounded span attribute.

        A string is kept as it is (not JSON-quoted); mappings, sequences, numbers, booleans and
        ``None`` are serialised as JSON (sets sorted, so the text is deterministic); any other
        object is turned into text by ``str`` (dates by ``isoformat``), also inside containers.
        Redaction (of the structure as by ``redact_value``, of every string and of every such
        text as by ``redact_text``) happens before truncation, so a secret that straddles the
        limit is hidden whole. When the redacted text is longer than
        ``max_length``, its first ``max_length`` characters are kept (fewer if the cut would split
        a ``[REDACTED:...]`` marker, which then goes whole) and ``…[truncated N chars]`` is
        appended, N being the number of characters dropped. The result is therefore at most
        ``max_length + len(f"…[truncated {N} chars]")`` characters long.
        """
        secrets = _normalize_secrets(secret_values)
        if isinstance(value, str):
            text = self._redact(value, secrets)
        elif value is None or isinstance(value, bool | int | float | Mapping | list | tuple | set | frozenset):
            safe = self._walk(value, secrets, 0, set(), for_json=True)
            try:
                text = json.dumps(safe, ensure_ascii=False)
            except (TypeError, ValueError):  # e.g. a huge int used as a key
                text = self._redact(_stringify(value), secrets)
        else:
            text = self._redact(_stringify(value), secrets)
        return self._truncate(text)

    def _truncate(self, text: str) -> str:
        limit = self._max_length
        if len(text) <= limit:
            return text
        cut = limit
        for marker in _MARKER_RE.finditer(text, max(0, limit - _MARKER_SCAN), limit + _MARKER_SCAN):
            if marker.start() < limit < marker.end():
                cut = marker.start()
                break
        return f"{text[:cut]}…[truncated {len(text) - cut} chars]"


_DEFAULT_REDACTOR: Final = Redactor()


def redact_text(text: str) -> str:
    """``text`` redacted by a default ``Redactor``."""
    return _DEFAULT_REDACTOR.redact_text(text)
