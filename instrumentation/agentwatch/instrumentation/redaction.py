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
text unchanged. This module is a leaf: it imports only the standard library.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

__all__ = ["DEFAULT_MAX_LENGTH", "REDACTED", "Redactor", "luhn_valid", "redact_text"]

REDACTED: Final = "[REDACTED]"
"""Prefix of every replacement; a finding becomes ``[REDACTED:<kind>]``, e.g. ``[REDACTED:email]``."""

DEFAULT_MAX_LENGTH: Final = 4096
"""Default cap, in characters, of an attribute built by ``Redactor.to_attribute`` (before the marker)."""

# A pass can create a new finding only by changing the context of its neighbours (a marker is not
# a word character, so ``\b``-style boundaries may start to hold); realistic text settles in two
# passes, and the cap bounds the worst case of adversarial input.
_MAX_PASSES: Final = 4
_MIN_SECRET_VALUE_LEN: Final = 4
_MAX_DEPTH: Final = 64
_MAX_INT_BITS: Final = 10_000  # json/str refuse ints beyond ~4300 digits; never raise on one
_MARKER_RE: Final = re.compile(r"\[REDACTED(?::[a-z0-9_]+)?\]")
_MARKER_SCAN: Final = 64  # longer than any marker: how far back a truncation looks for one to keep whole
_TOO_DEEP: Final = "…[nested too deep]"
_CYCLE: Final = "…[cycle]"

# Lower rank wins when overlapping findings of the same length are merged: the specific kind says
# more than the generic "secret" of a key=value pair that happens to hold, say, an OpenAI key.
_RANK_PRIVATE_KEY: Final = 0
_RANK_JWT: Final = 1
_RANK_AWS_SECRET: Final = 2
_RANK_AWS_KEY: Final = 3
_RANK_API_KEY: Final = 4
_RANK_BEARER: Final = 5
_RANK_URL: Final = 6
_RANK_CARD: Final = 7
_RANK_EMAIL: Final = 8
_RANK_CUSTOM: Final = 9
_RANK_SECRET: Final = 10


def _marker(kind: str) -> str:
    return f"{REDACTED[:-1]}:{kind}]"


_SECRET_MARKER: Final = _marker("secret")


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` passes the Luhn checksum (spaces and hyphens are ignored).

    A string with anything but ASCII digits, or with no digit at all, is not valid.
    """
    compact = digits.replace(" ", "").replace("-", "")
    if not compact or not (compact.isascii() and compact.isdigit()):
        return False
    total = 0
    for position, char in enumerate(reversed(compact)):
        digit = ord(char) - 48
        if position & 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class _Detector:
    """One kind of finding: a regex, the group(s) to hide, and where the regex is tried.

    Scanning a whole text with a regex costs about 10 ns per character even when nothing
    matches, and most detectors start with a lookbehind that defeats the regex engine's own
    prefix search. So a detector with ``anchors`` is tried only where one of them occurs
    (``str.find`` is far faster), with ``pattern.match`` at the anchor, or, when ``back_chars``
    is set, at the start of the run of those characters that ends at the anchor (the local part
    before an e-mail's ``@``). A detector without anchors scans the whole text; its pattern must
    then start with a literal or a character class, which the engine searches for quickly.
    """

    kind: str
    rank: int
    pattern: re.Pattern[str]
    groups: tuple[str, ...] = ()  # first group that took part is hidden; none means the whole match
    anchors: tuple[str, ...] = ()
    ignore_case: bool = False  # anchors are lower-case and looked for in the lower-cased text
    back_chars: frozenset[str] = frozenset()
    back_limit: int = 0
    requires: tuple[str, ...] = ()  # skip the detector unless one of these occurs (cheap gate for prose)
    validate: Callable[[str, re.Match[str]], bool] | None = None


# --- detectors ----------------------------------------------------------------------------------
_PRIVATE_KEY_RE: Final = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    # the search for END stops at the next BEGIN: a text of many ENDless headers stays linear
    r"(?:(?:(?!-----BEGIN).)*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    # a block cut before its END line (a truncated log) still hides its body, at the price of
    # hiding the words that follow it too
    r"|(?:[A-Za-z0-9+/=:,\s-]|\\[nrt])*)",
    re.DOTALL,
)

_JWT_RE: Final = re.compile(
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+){0,2}"
)

_API_KEY_RE: Final = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    # OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-): the digit keeps
    # kebab-case words that happen to start with "sk-" out
    r"sk-(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{20,}"
    r"|AIza[0-9A-Za-z_-]{35,}"  # Google API key
    r"|gh[pousr]_[A-Za-z0-9]{36,}"  # GitHub classic, OAuth, user-to-server, server-to-server, refresh
    r"|github_pat_[A-Za-z0-9_]{22,}"  # GitHub fine-grained
    r"|xox[abposre]-[A-Za-z0-9-]{10,}"  # Slack bot, user, app-level... tokens
    r"|xapp-[0-9]-[A-Za-z0-9-]{10,}"
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe secret and restricted keys
    r"|whsec_[A-Za-z0-9]{20,}"  # Stripe webhook signing secret
    r")"
)

_API_KEY_ANCHORS: Final = ("sk-", "AIza", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "xapp-")
_API_KEY_ANCHORS_STRIPE: Final = ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_")

_AWS_KEY_RE: Final = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")

# A secret access key is 40 base64 characters with no prefix: only a label makes it recognisable.
_AWS_SECRET_RE: Final = re.compile(
    r"(?:aws[-_. ]?)?secret[-_. ]?(?:access[-_. ]?)?key"
    r"""(?:\\?["'])?[ \t]*(?:=>|:=|[:=])[ \t]*(?:\\?["'])?"""
    r"(?P<value>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
    re.IGNORECASE,
)

# The token must hold a digit or be long: "the bearer of this letter" is prose, not a header.
_BEARER_RE: Final = re.compile(
    r"(?<![A-Za-z0-9])bearer[ \t]+"
    r"(?P<value>(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{8,}|[A-Za-z0-9._~+/=-]{20,})",
    re.IGNORECASE,
)

# user:password in a URL authority; the password may hold '@', so the last '@' before the path ends it.
_URL_CREDENTIALS_RE: Final = re.compile(r"""://(?P<value>[^\s/@:?#"'<>]*:[^\s/?#"'<>]+)@""")

# Only card brands' leading digits (2-6), so epoch milliseconds and snowflake ids stay; groups of
# 4-4-4-4(-3), 4-6-5 (Amex) and 4-6-4 (Diners) with one consistent separator, or no separator.
# The first digit comes before the lookbehinds (which then look past it) so that the engine can
# skip quickly to the next candidate digit.
_CARD_RE: Final = re.compile(
    r"[2-6](?<![0-9A-Za-z_-][2-6])(?<![0-9]\.[2-6])"
    r"(?:[0-9]{12,18}"
    r"|[0-9]{3}(?P<sep>[ -])"
    r"(?:[0-9]{4}(?P=sep)[0-9]{4}(?P=sep)[0-9]{4}(?:(?P=sep)[0-9]{3})?|[0-9]{6}(?P=sep)[0-9]{4,5}))"
    r"(?![0-9A-Za-z_]|\.[0-9])"
)

_EMAIL_LOCAL_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_EMAIL_RE: Final = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?P<tld>[A-Za-z]{2,})"
    r"(?![A-Za-z0-9-])"
)
# "icon@2x.png" is an asset name, not an address.
_FILE_EXTENSIONS: Final = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "pdf", "avif"})

# A Cookie header is secret as a whole: "theme=dark; sid=..." hides sid behind a harmless first pair.
_COOKIE_HEADER_RE: Final = re.compile(
    r"""(?<![A-Za-z0-9_])cookie[ \t]*:[ \t]*(?P<value>[^\s"'][^\r\n"']*)""",  # Set-Cookie too
    re.IGNORECASE,
)

# ``{keys}`` is the alternation of sensitive key names; the name may end a longer identifier
# (``db_password``, ``X-Api-Key``) but must be followed by the separator, so ``max_tokens`` and
# ``tokenizer`` are not keys. The auth scheme stays visible; the value alone is hidden.
_AUTH_SCHEME: Final = r"(?:(?:basic|bearer|digest|token|negotiate|ntlm)[ \t]+)?"
_KV_TEMPLATE: Final = r"""
    (?:{keys})
    (?:\\?["'])?                          # closing quote of a quoted key, maybe JSON-escaped
    [ \t]*(?:=>|:=|[:=])[ \t]*
    {scheme}                              # an auth scheme stays visible
    (?:
        # an earlier pass hid the value: match the marker (left alone as such) rather than let
        # the regex backtrack and take the kept scheme for the value
        (?P<marker>\[REDACTED(?::[a-z0-9_]+)?\][^\s"'`,;&)\]}>]*)
      | \\"(?P<edq>[^"\\\r\n]+)\\"        # JSON inside a JSON string: \"password\": \"...\"
        # a quoted value may carry a Python prefix (f'...') and the scheme inside its quotes; the
        # closing quote is optional so that a truncated line still hides its value
      | (?:[bfru]{1,2}(?=["']))?
        (?: "{scheme}(?P<dq>(?:[^"\\\r\n]|\\.)+)"? | '{scheme}(?P<sq>[^'\r\n]+)'? )
      | (?P<bare>[^\s"'`,;&{\[)\]}>][^\s"'`,;&)\]}>]*)
    )
""".replace("{scheme}", _AUTH_SCHEME)
_KV_GROUPS: Final = ("marker", "edq", "dq", "sq", "bare")
_SEPARATORS: Final = (":", "=")

_DEFAULT_SENSITIVE_KEYS: Final = (
    "password",
    "passwords",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "api_keys",
    "access_key",
    "secret_key",
    "private_key",
    "signing_key",
    "authorization",
    "auth",
    "cookie",
    "cookies",
    "session",
    "credential",
    "credentials",
    "jwt",
)


def _key_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [word.lower() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word]


def _kv_detectors(names: Sequence[str]) -> tuple[tuple[_Detector, ...], tuple[str, ...]]:
    """The free-text detectors for sensitive key ``names``, and the names' compact forms.

    Since a key may end a longer one, ``client_secret`` adds nothing to ``secret`` and is dropped
    from the regexes (it stays for dict keys, where it costs nothing). The rest are grouped by
    the first word they start with, one regex per group, so that the regex tried at an anchor
    holds only the names that can start there.
    """
    entries: dict[str, list[str]] = {}
    for name in names:
        words = _key_words(name)
        if not words:
            raise ValueError(f"sensitive key {name!r} has no letters or digits")
        entries["".join(words)] = words
    compact = tuple(sorted(entries))

    def subsumed(words: list[str]) -> bool:
        return any(
            len(other) < len(words) and words[-len(other) :] == other for other in entries.values() if other != words
        )

    kept = [words for words in entries.values() if not subsumed(words)]
    firsts = {words[0] for words in kept}
    anchors = sorted(w for w in firsts if not any(o != w and w.startswith(o) for o in firsts))
    detectors: list[_Detector] = []
    for anchor in anchors:
        fragments = sorted(
            {r"[-_. ]?".join(re.escape(word) for word in words) for words in kept if words[0].startswith(anchor)},
            key=lambda fragment: (-len(fragment), fragment),
        )
        pattern = re.compile(_KV_TEMPLATE.replace("{keys}", "|".join(fragments)), re.IGNORECASE | re.VERBOSE)
        detectors.append(
            _Detector(
                "secret",
                _RANK_SECRET,
                pattern,
                groups=_KV_GROUPS,
                anchors=(anchor,),
                ignore_case=True,
                requires=_SEPARATORS,
            )
        )
    return tuple(detectors), compact


_USERINFO_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~%+-:@!$&'()*,;=")


def _not_in_url_authority(text: str, match: re.Match[str]) -> bool:
    """False for the ``pass@host`` of ``scheme://user:pass@host``: the URL detector owns it.

    Walking back over userinfo characters from the address reaches ``//`` only inside an
    authority; a query (``?email=jane@example.com``) or a path stops the walk first.
    """
    index = match.start() - 1
    limit = max(0, index - 256)
    while index >= limit and text[index] in _USERINFO_CHARS:
        index -= 1
    return not (index >= 1 and text[index] == "/" and text[index - 1] == "/")


def _email_valid(text: str, match: re.Match[str]) -> bool:
    return match.group("tld").lower() not in _FILE_EXTENSIONS and _not_in_url_authority(text, match)


def _card_valid(_text: str, match: re.Match[str]) -> bool:
    return luhn_valid(match.group())


_BUILTIN_DETECTORS: Final = (
    _Detector("private_key", _RANK_PRIVATE_KEY, _PRIVATE_KEY_RE),
    _Detector("jwt", _RANK_JWT, _JWT_RE, anchors=("eyJ",)),
    _Detector("api_key", _RANK_API_KEY, _API_KEY_RE, anchors=(*_API_KEY_ANCHORS, *_API_KEY_ANCHORS_STRIPE)),
    _Detector("aws_key", _RANK_AWS_KEY, _AWS_KEY_RE, anchors=("AKIA", "ASIA")),
    _Detector(
        "aws_secret",
        _RANK_AWS_SECRET,
        _AWS_SECRET_RE,
        ("value",),
        anchors=("secret",),
        ignore_case=True,
        requires=_SEPARATORS,
    ),
    _Detector("bearer", _RANK_BEARER, _BEARER_RE, ("value",), anchors=("bearer",), ignore_case=True),
    _Detector("url_credentials", _RANK_URL, _URL_CREDENTIALS_RE, ("value",)),
    _Detector("card", _RANK_CARD, _CARD_RE, validate=_card_valid),
    _Detector(
        "email",
        _RANK_EMAIL,
        _EMAIL_RE,
        anchors=("@",),
        back_chars=_EMAIL_LOCAL_CHARS,
        back_limit=64,
        validate=_email_valid,
    ),
    _Detector(
        "secret", _RANK_SECRET, _COOKIE_HEADER_RE, ("value",), anchors=("cookie",), ignore_case=True, requires=(":",)
    ),
)
_DEFAULT_KV, _DEFAULT_KEY_SUFFIXES = _kv_detectors(_DEFAULT_SENSITIVE_KEYS)

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
