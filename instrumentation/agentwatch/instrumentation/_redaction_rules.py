"""What ``redaction`` looks for: the replacement marker, the detectors (regexes, anchors, validators), sensitive keys.

A private part of the ``redaction`` leaf (see there): it imports only the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

REDACTED: Final = "[REDACTED]"
"""Prefix of every replacement; a finding becomes ``[REDACTED:<kind>]``, e.g. ``[REDACTED:email]``."""

DEFAULT_MAX_LENGTH: Final = 4096
"""Default cap, in characters, of an attribute built by ``Redactor.to_attribute`` (before the marker)."""

_MARKER_RE: Final = re.compile(r"\[REDACTED(?::[a-z0-9_]+)?\]")

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
