"""Content capture: off by default; when on, no secret of the corpus reaches an exported span."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _paths import DATA
from _telemetry import Telemetry, attrs

from agentwatch.instrumentation import Policy, ToolGateway, semconv

CORPUS: list[dict[str, str]] = json.loads((DATA / "secret_corpus.json").read_text())


def _everything_exported(telemetry: Telemetry) -> str:
    parts = []
    for span in telemetry.spans():
        parts.append(json.dumps(dict(attrs(span)), default=str))
        parts.extend(json.dumps(dict(e.attributes or {}), default=str) for e in span.events)
        parts.append(span.status.description or "")
    return "\n".join(parts)


def _agent_touching(telemetry: Telemetry, text: str) -> None:
    def lookup(note: str, password: str = "") -> dict[str, Any]:
        return {"echo": note, "nested": {"api_key": "ignored", "log": [note]}}

    def fail(note: str) -> None:
        raise ValueError(f"upstream rejected: {note}")

    gateway = ToolGateway(policy=Policy(allow=["crm.*"]), tools={"crm.lookup": lookup, "crm.fail": fail})
    with telemetry.run(gateway=gateway) as run:
        run.record_input(text)
        with run.step():
            run.record_llm_call(
                model="gpt-4o-mini",
                input_tokens=5,
                output_tokens=5,
                input_messages=[{"role": "user", "content": text}],
                output_messages=[{"role": "assistant", "content": f"I saw: {text}"}],
            )
            run.call_tool("crm.lookup", {"note": text, "password": "hunter2-is-my-password"})
            with pytest.raises(ValueError, match="upstream rejected"):
                run.call_tool("crm.fail", {"note": text})
        run.record_output(f"done with {text}")


def test_content_is_not_captured_by_default(telemetry: Telemetry) -> None:
    _agent_touching(telemetry, "my e-mail is jane.doe@example.com")
    blob = _everything_exported(telemetry)
    assert "jane.doe" not in blob
    assert semconv.GEN_AI_TOOL_CALL_ARGUMENTS not in blob
    assert semconv.RUN_INPUT not in blob


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 50
    assert len({entry["kind"] for entry in CORPUS}) >= 10


def test_no_corpus_secret_reaches_an_exported_span(telemetry: Telemetry) -> None:
    telemetry.with_settings(capture_content=True)
    for entry in CORPUS:
        _agent_touching(telemetry, entry["text"])
    blob = _everything_exported(telemetry)
    leaked = [entry["kind"] + ": " + entry["secret"] for entry in CORPUS if entry["secret"] in blob]
    assert not leaked, "\n".join(leaked)
    assert "hunter2-is-my-password" not in blob
    # capture is really on: the redacted content is there
    assert blob.count("[REDACTED") >= len(CORPUS)
    assert semconv.GEN_AI_TOOL_CALL_ARGUMENTS in blob
    assert semconv.GEN_AI_INPUT_MESSAGES in blob


def test_captured_content_is_truncated(telemetry: Telemetry) -> None:
    from dataclasses import replace

    telemetry.with_settings(capture_content=True)
    telemetry.settings = replace(telemetry.settings, redactor=type(telemetry.settings.redactor)(max_length=64))
    gateway = ToolGateway(policy=Policy(allow=["crm.*"]), tools={"crm.lookup": lambda note: note})
    with telemetry.run(gateway=gateway) as run:
        run.call_tool("crm.lookup", {"note": "x" * 10_000})
    (tool,) = telemetry.tools()
    captured = attrs(tool)[semconv.GEN_AI_TOOL_CALL_RESULT]
    assert len(captured) < 200
    assert "truncated" in captured
