"""Redaction: every corpus secret is hidden, benign text is untouched, structures and truncation are safe."""

from __future__ import annotations

import datetime
import json
import time
from types import MappingProxyType

import pytest
from _paths import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.instrumentation import redaction
from agentwatch.instrumentation.redaction import (
    DEFAULT_MAX_LENGTH,
    REDACTED,
    Redactor,
    luhn_valid,
    redact_text,
)

CORPUS: list[dict[str, str]] = json.loads((DATA / "secret_corpus.json").read_text(encoding="utf-8"))
BENIGN: list[str] = json.loads((DATA / "benign_corpus.json").read_text(encoding="utf-8"))

OPENAI_KEY = "sk-proj-Xq7LmN2pR8sT4vW6yZ1aB3cD5eF7gH9jK0lM2nP4qR6sT8"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
    ".Sfl8KxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _windows(secret: str, width: int = 10) -> list[str]:
    return [secret[i : i + width] for i in range(len(secret) - width + 1)]


# --- the corpora ----------------------------------------------------------------------------------
def test_corpus_schema_and_breadth() -> None:
    assert len(CORPUS) >= 60
    assert len(BENIGN) >= 20
    for entry in CORPUS:
        assert set(entry) == {"kind", "text", "secret"}
        assert entry["secret"] in entry["text"], entry
    kinds = {entry["kind"] for entry in CORPUS}
    assert {"openai_key", "anthropic_key", "github_token", "jwt", "private_key", "card_number", "email"} <= kinds
    assert len(kinds) >= 12


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i:02d}-{e['kind']}" for i, e in enumerate(CORPUS)])
def test_corpus_secret_is_removed_from_text(entry: dict[str, str]) -> None:
    out = redact_text(entry["text"])
    assert entry["secret"] not in out
    assert f"{REDACTED[:-1]}:" in out
    # no recognisable piece of a long secret survives either (a partial match would leave one)
    if len(entry["secret"]) >= 16:
        survivors = [w for w in _windows(entry["secret"]) if w in out]
        assert not survivors, survivors


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i:02d}-{e['kind']}" for i, e in enumerate(CORPUS)])
def test_corpus_secret_is_removed_from_attribute(entry: dict[str, str]) -> None:
    payload = {"tool": "crm.note", "args": {"note": entry["text"], "history": [entry["text"], (1, entry["text"])]}}
    attribute = Redactor(max_length=1_000_000).to_attribute(payload)
    assert entry["secret"] not in attribute
    # JSON escaping (of quotes, backslashes, newlines) must not hide a leak from the check above
    leaves = _strings(json.loads(attribute))
    assert len(leaves) == 4
    assert not [leaf for leaf in leaves if entry["secret"] in leaf]


@pytest.mark.parametrize("text", BENIGN)
def test_benign_text_is_unchanged(text: str) -> None:
    redactor = Redactor()
    assert redactor.redact_text(text) == text
    assert redactor.to_attribute(text) == text
    assert redactor.to_attribute({"text": text}) == json.dumps({"text": text}, ensure_ascii=False)


def test_text_without_findings_is_returned_as_the_same_object() -> None:
    text = BENIGN[0] * 3
    assert Redactor().redact_text(text) is text


# --- detectors, one by one -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {OPENAI_KEY} end", "key [REDACTED:api_key] end"),
        ("export K=sk-ant-api03-Ab3dEf6hIj9lMn2pQr5tUv8xYz1BcDeFgHiJkLmN", "export K=[REDACTED:api_key]"),
        ("google AIzaSyD4x9Qm2WvT7rLp0nK3bJ8hF6cV1zXq5sY ok", "google [REDACTED:api_key] ok"),
        ("gh ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 ok", "gh [REDACTED:api_key] ok"),
        ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack [REDACTED:api_key]"),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe [REDACTED:api_key]"),
        ("id AKIAIOSFODNN7EXAMPLE here", "id [REDACTED:aws_key] here"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [REDACTED:aws_secret]",
        ),
        ("Authorization: Bearer 9f8e7d6c5b4a3f2e1d0c8b7a", "Authorization: Bearer [REDACTED:bearer]"),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [REDACTED:jwt]"),
        (f"token {JWT}.", "token [REDACTED:jwt]."),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7x\nq9w==\n-----END RSA PRIVATE KEY-----\nbye",
            "[REDACTED:private_key]\nbye",
        ),
        ("paid with 4111 1111 1111 1111 today", "paid with [REDACTED:card] today"),
        ("amex 3782-822463-10005.", "amex [REDACTED:card]."),
        ("mail jane.doe@example.com now", "mail [REDACTED:email] now"),
        ("postgres://app:s3cr3t@db.internal:5432/x", "postgres://[REDACTED:url_credentials]@db.internal:5432/x"),
        ("login user=alice password=hunter2 ip=10.0.0.4", "login user=alice password=[REDACTED:secret] ip=10.0.0.4"),
        ('{"client_secret": "abc", "max_tokens": 5}', '{"client_secret": "[REDACTED:secret]", "max_tokens": 5}'),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED:secret]"),
        ("X-Api-Key: 7c2f9a1e4b6d", "X-Api-Key: [REDACTED:secret]"),
        ("DB_PASSWORD='c0rrect horse'", "DB_PASSWORD='[REDACTED:secret]'"),
        ("Cookie: theme=dark; sid=abc123\nHost: x", "Cookie: [REDACTED:secret]\nHost: x"),
    ],
)
def test_detector(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 (Luhn fails)",
        "id 4000123412341235 fails Luhn",
        "epoch 1717171717171",  # 13 digits, but no card brand starts with 1
        "pi 3.4111111111111111",  # decimals are not cards
        "max_tokens=512 input_tokens: 10 tokenizer=bpe",
        "The author: Jane; the session lasted 5 minutes",
        "the bearer of bad news",
        "icon@2x.png",
        "task-management-dashboard-component",
        "https://example.com:8443/path?q=1",
    ],
)
def test_no_false_positive(text: str) -> None:
    assert redact_text(text) == text


def test_url_credentials_keep_the_host_even_with_an_at_in_the_password() -> None:
    out = redact_text("https://deploy:p@ss@registry.example.com/v2/ and https://example.com?email=jane@example.com")
    assert out == (
        "https://[REDACTED:url_credentials]@registry.example.com/v2/ and https://example.com?email=[REDACTED:email]"
    )


def test_private_key_without_end_line_hides_its_body() -> None:
    text = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7"
    out = redact_text(text)
    assert "MIIEvQ" not in out
    assert "BKcwgg" not in out


def test_json_escaped_private_key_is_hidden() -> None:
    text = json.dumps(
        {"private_key": "x", "pem": "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----"}
    )
    out = redact_text(text)
    assert "MHcCAQEEIBkg" not in out
    assert "[REDACTED:private_key]" in out


def test_a_finding_hidden_by_its_neighbour_is_found_once_the_neighbour_is_redacted() -> None:
    # glued to the PEM's dashes the key fails its word-boundary check; it passes once the PEM is a marker
    text = f"-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBg\n-----END PRIVATE KEY-----{OPENAI_KEY}"
    out = redact_text(text)
    assert out == "[REDACTED:private_key][REDACTED:api_key]"
    assert redact_text(out) == out


def test_overlapping_findings_become_one_marker() -> None:
    # the password value holds an e-mail and more: the whole value goes, as the longest finding
    assert redact_text("password=jane@example.com!x;y") == "password=[REDACTED:secret];y"
    # the same span found twice: the more specific kind names it
    assert redact_text("password=jane@example.com;y") == "password=[REDACTED:email];y"
    assert redact_text(f'"api_key": "{OPENAI_KEY}"') == '"api_key": "[REDACTED:api_key]"'


# --- structures ------------------------------------------------------------------------------------
def test_sensitive_keys_in_nested_structures() -> None:
    config_in: dict[str, object] = {
        "db_password": 1234,
        "X-Api-Key": ["a", "b"],
        "Client-Secret": None,
        "refresh_token": {"nested": "x"},
        "apiKey": "k",
        "max_tokens": 512,
        "input_tokens": 10,
        "author": "Jane",
        "session_id": "s-1",
    }
    value = {
        "config": config_in,
        "headers": [
            {"name": "Authorization", "value": "Basic abc"},
            {"name": "Accept", "value": "application/json"},
        ],
        "env": ({"key": "AWS_SECRET_ACCESS_KEY", "value": "zzz"},),
        "note": "mail me at bob@example.com",
    }
    out = Redactor().redact_value(value)
    assert isinstance(out, dict)
    config = out["config"]
    for key in ("db_password", "X-Api-Key", "Client-Secret", "refresh_token", "apiKey"):
        assert config[key] == "[REDACTED:secret]", key
    assert config["max_tokens"] == 512
    assert config["input_tokens"] == 10
    assert config["author"] == "Jane"
    assert config["session_id"] == "s-1"
    assert out["headers"][0] == {"name": "Authorization", "value": "[REDACTED:secret]"}
    assert out["headers"][1] == {"name": "Accept", "value": "application/json"}
    assert out["env"] == ({"key": "AWS_SECRET_ACCESS_KEY", "value": "[REDACTED:secret]"},)
    assert out["note"] == "mail me at [REDACTED:email]"
    # the input is not modified
    assert config_in["db_password"] == 1234


def test_header_pairs_hide_their_value() -> None:
    headers = [("Authorization", "Basic dXNlcjpwYXNz"), ("Accept", "application/json"), (b"cookie", b"sid=1")]
    assert Redactor().redact_value(headers) == [
        ("Authorization", "[REDACTED:secret]"),
        ("Accept", "application/json"),
        (b"cookie", "[REDACTED:secret]"),
    ]
    assert Redactor().to_attribute({"h": [("X-Api-Key", "k1")]}) == '{"h": [["X-Api-Key", "[REDACTED:secret]"]]}'


def test_redact_value_keeps_shapes_and_scalars() -> None:
    value = (["jane@example.com", 1, 2.5, True, None], {"a@b.io": 3}, frozenset({"x"}))
    out = Redactor().redact_value(value)
    assert out == (["[REDACTED:email]", 1, 2.5, True, None], {"[REDACTED:email]": 3}, frozenset({"x"}))
    marker = object()
    assert Redactor().redact_value(marker) is marker
    assert Redactor().redact_value(MappingProxyType({"token": "t"})) == {"token": "[REDACTED:secret]"}


def test_custom_sensitive_keys_replace_the_defaults() -> None:
    redactor = Redactor(sensitive_keys=["ssn", "pin_code"])
    assert redactor.redact_value({"SSN": "123-45-6789", "password": "kept"}) == {
        "SSN": "[REDACTED:secret]",
        "password": "kept",
    }
    assert (
        redactor.redact_text("user ssn=123-45-6789 PIN-CODE: 4455")
        == "user ssn=[REDACTED:secret] PIN-CODE: [REDACTED:secret]"
    )
    extended = Redactor(sensitive_keys=(*Redactor.DEFAULT_SENSITIVE_KEYS, "ssn"))
    assert extended.redact_value({"ssn": 1, "password": 2}) == {
        "ssn": "[REDACTED:secret]",
        "password": "[REDACTED:secret]",
    }


def test_extra_patterns() -> None:
    redactor = Redactor(extra_patterns=[r"\bEMP-\d{6}\b", r"badge=(?P<value>\w+)"])
    assert redactor.redact_text("EMP-123456 badge=A77 EMP-12") == "[REDACTED:custom] badge=[REDACTED:custom] EMP-12"
    with pytest.raises(ValueError, match="not a valid regex"):
        Redactor(extra_patterns=["("])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="max_length"):
        Redactor(max_length=0)
    with pytest.raises(ValueError, match="no letters"):
        Redactor(sensitive_keys=["--"])


# --- secret values ---------------------------------------------------------------------------------
def test_secret_values_are_removed_everywhere() -> None:
    redactor = Redactor()
    scoped = "scoped-cred-7Hq2"
    text = f"calling with {scoped}; echo {scoped}{scoped}"
    assert redactor.redact_text(text, secret_values=[scoped]) == (
        "calling with [REDACTED:secret]; echo [REDACTED:secret][REDACTED:secret]"
    )
    assert redactor.redact_value({"args": [f"x{scoped}y"]}, secret_values={scoped}) == {"args": ["x[REDACTED:secret]y"]}
    assert scoped not in redactor.to_attribute({"deep": {"er": scoped}}, secret_values=(scoped,))
    # a lone string is one secret, not a collection of characters
    assert redactor.redact_text(f"a {scoped}", secret_values=scoped) == "a [REDACTED:secret]"


def test_short_secret_values_are_ignored() -> None:
    assert Redactor().redact_text("abc and abcd", secret_values=["abc", "", "abcd"]) == "abc and [REDACTED:secret]"


def test_secret_values_are_found_json_escaped() -> None:
    secret = 'p"w\\0rd!'
    collector_view = json.dumps({"arg": secret})  # how the collector sees a tool argument
    assert "w\\\\0rd" in collector_view
    out = Redactor().redact_text(collector_view, secret_values=[secret])
    assert out == '{"arg": "[REDACTED:secret]"}'


def test_secret_value_that_is_part_of_a_marker_does_not_break_idempotence() -> None:
    redactor = Redactor()
    once = redactor.redact_text("my secret word", secret_values=["secret"])
    assert once == "my [REDACTED:secret] word"
    assert redactor.redact_text(once, secret_values=["secret", "REDACTED"]) == once


# --- attributes and truncation ---------------------------------------------------------------------
def test_to_attribute_of_non_string_values() -> None:
    redactor = Redactor()
    assert redactor.to_attribute(42) == "42"
    assert redactor.to_attribute(None) == "null"
    assert redactor.to_attribute(True) == "true"
    assert redactor.to_attribute(1.5) == "1.5"
    assert redactor.to_attribute([1, "a@b.io"]) == '[1, "[REDACTED:email]"]'
    assert redactor.to_attribute({"when": datetime.date(2024, 5, 2)}) == '{"when": "2024-05-02"}'
    assert redactor.to_attribute({"password": 1, "n": 2}) == '{"password": "[REDACTED:secret]", "n": 2}'
    assert redactor.to_attribute({(1, 2): "v", 3: "w"}) == '{"(1, 2)": "v", "3": "w"}'
    assert redactor.to_attribute({"s": {"b", "a", "c"}}) == '{"s": ["a", "b", "c"]}'
    assert redactor.to_attribute(b"bytes") == "b'bytes'"
    assert redactor.to_attribute("ünïcode ✓") == "ünïcode ✓"


def test_to_attribute_redacts_the_text_of_arbitrary_objects() -> None:
    class Creds:
        def __repr__(self) -> str:
            return f"Creds(user='bob', password='hunter2', key='{OPENAI_KEY}')"

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    redactor = Redactor()
    out = redactor.to_attribute({"creds": Creds(), "broken": Broken()})
    assert "hunter2" not in out
    assert OPENAI_KEY not in out
    assert "<unprintable Broken>" in out
    assert redactor.to_attribute(Creds()) == "Creds(user='bob', password='[REDACTED:secret]', key='[REDACTED:api_key]')"


def test_cycles_and_deep_nesting_do_not_raise() -> None:
    loop: list[object] = ["a@b.io"]
    loop.append(loop)
    assert Redactor().to_attribute(loop) == '["[REDACTED:email]", "…[cycle]"]'
    deep: list[object] = ["jane@example.com"]
    for _ in range(5000):
        deep = [deep]
    out = Redactor().to_attribute(deep)
    assert "jane@example.com" not in out
    assert "nested too deep" in out
    assert "jane@example.com" not in repr(Redactor().redact_value(deep))
    assert "<int of" in Redactor().to_attribute([10**5000])


def test_truncation_length_and_marker() -> None:
    redactor = Redactor(max_length=100)
    out = redactor.to_attribute("x" * 1234)
    marker = "…[truncated 1134 chars]"
    assert out == "x" * 100 + marker
    assert len(out) == redactor.max_length + len(marker)
    assert redactor.to_attribute("y" * 100) == "y" * 100
    assert Redactor().max_length == DEFAULT_MAX_LENGTH == 4096
    full = json.dumps({"items": list(range(1000))})
    assert Redactor(max_length=50).to_attribute({"items": list(range(1000))}) == (
        full[:50] + f"…[truncated {len(full) - 50} chars]"
    )


@pytest.mark.parametrize("offset", range(-30, 10))
def test_secret_straddling_the_truncation_boundary_does_not_leak(offset: int) -> None:
    limit = 200
    text = "a" * (limit + offset) + " " + OPENAI_KEY + " tail" * 20
    out = Redactor(max_length=limit).to_attribute(text)
    assert "…[truncated" in out
    assert OPENAI_KEY[:4] not in out  # not even "sk-p"
    kept = out.split("…[truncated")[0]
    assert len(kept) <= limit
    # a marker is never cut in half either
    assert kept.count("[") == kept.count("]")


# --- luhn ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("4111 1111 1111 1111", True),
        ("3782-822463-10005", True),
        ("79927398713", True),
        ("0", True),
        ("4111111111111112", False),
        ("79927398710", False),
        ("", False),
        (" - ", False),
        ("4111a11111111111", False),
        ("٤١١١١١١١١١١١١١١١", False),  # Arabic-Indic digits are not card digits
    ],
)
def test_luhn_valid(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


# --- properties ------------------------------------------------------------------------------------
FRAGMENTS = [
    "password", "Authorization", "Bearer ", "Basic ", "token", "Cookie", "=", ": ", '"', "'", "\\", "\n", " ", "{", "}",
    "sk-", "proj-", "ant-", "abc123DEF456ghi789JKL0", "AKIA", "IOSFODNN7EXAMPLE", "eyJ", "hbGciOiJIUzI1NiJ9", ".",
    "@", "example.com", "://", "user:", "4111", "1111", " 1111", "-", "[REDACTED", "]", "[REDACTED:secret]",
    "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "ghp_", "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "xoxb-", "123456789012", "secret_access_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "mailto:", "3782",
    "822463", "10005", "&", ";", "f'",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_redact_text_is_total_and_idempotent_on_any_text(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=16).map("".join))
def test_redact_text_is_idempotent_on_secret_like_text(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once
    assert len(Redactor(max_length=40).to_attribute({"t": text})) <= 40 + len("…[truncated 999 chars]")


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
        max_leaves=20,
    )
)
def test_to_attribute_always_returns_bounded_text(value: object) -> None:
    out = Redactor(max_length=64).to_attribute(value)
    assert isinstance(out, str)
    assert len(out) <= 64 + len("…[truncated 999999 chars]")


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN PRIVATE KEY-----!" * 8000,  # many headers without END
        "eyJ" * 20_000,
        "sk-a" * 15_000,
        "a@" * 30_000,
        'password: "' + "\\a" * 30_000,
        "://a:" + "@" * 60_000,
        "4111 " * 12_000,
    ],
    ids=["pem", "jwt", "api_key", "email", "kv", "url", "card"],
)
def test_adversarial_input_takes_linear_time(text: str) -> None:
    # a collector scrubs untrusted spans: a quadratic regex would be a denial of service
    start = time.perf_counter()
    once = redact_text(text)
    assert time.perf_counter() - start < 2.0
    assert redact_text(once) == once


# --- module surface --------------------------------------------------------------------------------
def test_public_surface() -> None:
    assert sorted(redaction.__all__) == ["DEFAULT_MAX_LENGTH", "REDACTED", "Redactor", "luhn_valid", "redact_text"]
    assert REDACTED == "[REDACTED]"
    assert redact_text("mail a@b.io") == Redactor().redact_text("mail a@b.io") == "mail [REDACTED:email]"
