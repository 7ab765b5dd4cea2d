"""``Redactor.might_contain_secret`` and ``is_sensitive_key``: the screen never misses what ``redact_text`` finds.

The collector skips ``redact_text`` for any value the screen clears, so a screen that says "clean"
for a text ``redact_text`` would change is a leak. These tests hold it to that on the secret
corpus, on random and secret-like text (Unicode case folding included), for custom keys and
patterns, and check that the screen is monotone under joining (the collector may screen many
values at once).
"""

from __future__ import annotations

import json
import re
import sys

import pytest
from _paths import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.instrumentation import redaction
from agentwatch.instrumentation.redaction import Redactor, redact_text

CORPUS: list[dict[str, str]] = json.loads((DATA / "secret_corpus.json").read_text(encoding="utf-8"))
BENIGN: list[str] = json.loads((DATA / "benign_corpus.json").read_text(encoding="utf-8"))
DEFAULT = Redactor()

FRAGMENTS = [
    "password", "PassWord", "Authorization", "Bearer ", "bearer\t", "Basic ", "token", "Cookie", "cookie", "=", ": ",
    ":", '"', "'", "\\", "\n", " ", "{", "}", "sk-", "sk_live_", "rk_test_", "whsec_", "proj-", "ant-",
    "abc123DEF456ghi789JKL0", "AKIA", "ASIA", "IOSFODNN7EXAMPLE", "eyJ", "hbGciOiJIUzI1NiJ9", ".", "@",
    "example.com", "://", "user:", "4111", "1111", " 1111", "-", "-----BEGIN RSA PRIVATE KEY-----", "ghp_",
    "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "xoxb-", "xapp-1-", "AIza", "123456789012", "secret_access_key",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "3782", "822463", "10005", "&", ";", "api_key", "X-Api-Key",
    "session", "jwt", "credential", "passphrase", "private_key", "signing_key", "access_token", "auth",
    # non-ASCII letters that a case-insensitive regex matches to ASCII ones, and one that lengthens lower()
    "ſecret", "paſſword", "\u212aey", "cooKie", "İ", "ı", "ẞ", "ǅ",
]  # fmt: skip
SECRETISH = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=14).map("".join)


def _fold_needed(char: str) -> bool:
    return bool(re.fullmatch("[a-z]", char, re.IGNORECASE)) or any("a" <= c <= "z" for c in char.lower())


def test_case_fold_table_covers_every_character_that_can_match_an_ascii_letter() -> None:
    # the screen looks for case-insensitive anchors in text.translate(_CASE_FOLD).lower(): every
    # non-ASCII character that re.IGNORECASE matches to an ASCII letter, or that lower() turns
    # into one, must be folded there
    missing = [
        hex(code)
        for code in range(128, sys.maxunicode + 1)
        if _fold_needed(chr(code)) and code not in redaction._CASE_FOLD
    ]
    assert not missing


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i:02d}-{e['kind']}" for i, e in enumerate(CORPUS)])
def test_every_corpus_secret_passes_the_screen(entry: dict[str, str]) -> None:
    assert DEFAULT.might_contain_secret(entry["text"])
    assert DEFAULT.might_contain_secret(entry["secret"]) or DEFAULT.redact_text(entry["secret"]) == entry["secret"]


def test_typical_agent_values_are_cleared() -> None:
    values = [
        "support", "acme", "stable", "chat", "gpt-4o-mini", "openai", "tool_calls", "invoke_agent", "execute_tool",
        "kb.search", "allowed", "allow:orders.lookup", "325a39b35e6f4cae9130f59cbc6da4bf", "call_1", "1200",
        "0.0001995", "completed", "agentwatch.step", "step support", "chat gpt-4o-mini", "", "stop",
    ]  # fmt: skip
    assert [v for v in values if DEFAULT.might_contain_secret(v)] == []


@pytest.mark.parametrize("text", BENIGN)
def test_benign_text_screen_is_consistent(text: str) -> None:
    if not DEFAULT.might_contain_secret(text):
        assert DEFAULT.redact_text(text) is text


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SECRETISH)
def test_a_cleared_text_is_left_alone_by_redact_text(text: str) -> None:
    if not DEFAULT.might_contain_secret(text):
        assert DEFAULT.redact_text(text) is text


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_a_cleared_random_text_is_left_alone(text: str) -> None:
    if not DEFAULT.might_contain_secret(text):
        assert DEFAULT.redact_text(text) is text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SECRETISH, min_size=1, max_size=5))
def test_the_screen_is_monotone_under_joining(parts: list[str]) -> None:
    if not DEFAULT.might_contain_secret("\x00".join(parts)):
        assert not any(DEFAULT.might_contain_secret(part) for part in parts)


@pytest.mark.parametrize(
    "text",
    [
        "ſecret_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY İ",  # lower() lengthens İ: whole-text fallback
        "paſſword=hunter2 İ",
        "\u212aey cooKie: sid=abc",
        "PASSWORD: hunter2",
        "x-api-key=7c2f9a1e4b6d",
        "Authorization: BEARER 9f8e7d6c5b4a3f2e1d0c8b7a",
        "mail ops@example.com",
        "4111 1111 1111 1111",
    ],
)
def test_the_screen_catches_case_variants_and_fallbacks(text: str) -> None:
    assert DEFAULT.redact_text(text) != text, "the case itself must be a finding"
    assert DEFAULT.might_contain_secret(text)


def test_custom_sensitive_keys_drive_the_screen() -> None:
    redactor = Redactor(sensitive_keys=["ssn"])
    assert redactor.might_contain_secret("ssn=123-45-6789")
    assert redactor.redact_text("ssn=123-45-6789") != "ssn=123-45-6789"
    # the default keys are replaced: password=... is no longer a finding, and the screen knows it
    assert redactor.redact_text("password=hunter2") == "password=hunter2"
    assert not redactor.might_contain_secret("password=hunter2")


def test_extra_patterns_make_the_screen_opaque() -> None:
    redactor = Redactor(extra_patterns=[r"\bEMP-\d{6}\b"])
    assert redactor.might_contain_secret("anything at all")
    assert redactor.redact_text("EMP-123456") == "[REDACTED:custom]"


def test_empty_text_is_clean() -> None:
    assert not DEFAULT.might_contain_secret("")


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("password", True),
        ("db_password", True),
        ("X-Api-Key", True),
        ("http.request.header.authorization", True),
        ("Cookie", True),
        ("max_tokens", False),
        ("gen_ai.usage.input_tokens", False),
        ("session_id", False),
        ("author", False),
        ("agentwatch.tool.idempotency_key", False),
    ],
)
def test_is_sensitive_key(key: str, sensitive: bool) -> None:
    assert DEFAULT.is_sensitive_key(key) is sensitive
    # the same rule redact_value applies
    assert (DEFAULT.redact_value({key: "v"}) == {key: "[REDACTED:secret]"}) is sensitive


def test_existing_behaviour_is_unchanged() -> None:
    assert redact_text("login user=alice password=hunter2") == "login user=alice password=[REDACTED:secret]"
    assert sorted(redaction.__all__) == ["DEFAULT_MAX_LENGTH", "REDACTED", "Redactor", "luhn_valid", "redact_text"]
