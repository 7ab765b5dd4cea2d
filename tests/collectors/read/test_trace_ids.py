"""Any stored trace by its trace id: foreign GenAI spans (OpenInference, OTel GenAI) as a tree, with content.

The spans come from the real OpenTelemetry SDK, with no agentwatch attributes, shipped by the official
OTLP/HTTP exporter to an in-process collector (which stamps the token's tenant and redacts); they are
read back by trace id through ``get_trace``, the ``agentwatch trace`` command and the read API.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _otlp_clients import Collector, run_example_agent, running_collector
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentwatch.collectors.cli.read import add_read_commands
from agentwatch.collectors.read.models import TraceNode, TraceView
from agentwatch.collectors.read.render import render_trace
from agentwatch.collectors.read.traces import get_trace, get_trace_by_id, is_trace_id
from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

TOKENS = {"acme": "acme-secret-token", "globex": "globex-secret-token"}
EMAIL = "alice@example.com"
API_KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e"


@dataclass
class Stored:
    collector: Collector
    trace_id: str
    run_id: str
    run_trace_id: str


def bearer(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"}


def exporter(collector: Collector, tenant: str) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=collector.traces_url, headers=bearer(tenant))


def foreign_trace(collector: Collector) -> str:
    """A RAG app's trace: an OpenInference chain with an LLM and a tool span, and OTel GenAI chat/tool spans."""
    provider = TracerProvider(resource=Resource.create({"service.name": "rag-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter(collector, "acme")))
    openinference = provider.get_tracer("openinference.instrumentation.langchain", "0.1.0")
    genai = provider.get_tracer("opentelemetry.instrumentation.openai_v2", "2.0b0")
    try:
        with openinference.start_as_current_span(
            "RunnableSequence",
            attributes={"openinference.span.kind": "CHAIN", "input.value": f"refund the order of {EMAIL}"},
        ) as root:
            with openinference.start_as_current_span(
                "ChatOpenAI",
                kind=SpanKind.CLIENT,
                attributes={
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "gpt-4o-mini",
                    "llm.token_count.prompt": 42,
                    "llm.token_count.completion": 7,
                    "input.value": "Which order?\nThe last one.",
                    "output.value": "Order 1234",
                },
            ):
                pass
            with openinference.start_as_current_span(
                "lookup_order",
                attributes={
                    "openinference.span.kind": "TOOL",
                    "tool.name": "lookup_order",
                    "input.value": json.dumps({"order": 1234, "api_key": API_KEY}),
                    "output.value": "x" * 500,
                },
            ) as tool:
                tool.add_event("retry", {"attempt": 1})
                tool.add_event("retry", {"attempt": 2})
            with genai.start_as_current_span(
                "chat gpt-4o",
                kind=SpanKind.CLIENT,
                attributes={
                    semconv.GEN_AI_OPERATION_NAME: "chat",
                    semconv.GEN_AI_REQUEST_MODEL: "gpt-4o",
                    semconv.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: 100,
                    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 20,
                    semconv.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "content": "refund it"}]),
                },
            ):
                pass
            with genai.start_as_current_span(
                "execute_tool refund",
                attributes={
                    semconv.GEN_AI_OPERATION_NAME: "execute_tool",
                    semconv.GEN_AI_TOOL_NAME: "refund",
                    semconv.GEN_AI_TOOL_CALL_ARGUMENTS: json.dumps({"order": 1234, "notify": EMAIL}),
                    semconv.GEN_AI_TOOL_CALL_RESULT: "refused",
                },
            ) as refund:
                refund.set_status(Status(StatusCode.ERROR, "refund refused"))
            trace_id = format(root.get_span_context().trace_id, "032x")
    finally:
        provider.shutdown()
    return trace_id


@pytest.fixture
def stored(clickhouse_url: str, tmp_path: Path) -> Iterator[Stored]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"token": TOKENS[tenant], "tenant": tenant, "scopes": ["ingest", "read"]}
                    for tenant in ("acme", "globex")
                ]
            }
        ),
        encoding="utf-8",
    )
    with running_collector(clickhouse_url, tmp_path, tokens=str(tokens)) as collector:
        trace_id = foreign_trace(collector)
        sent = run_example_agent(exporter(collector, "acme"))
        collector.drain()
        run_id = sent.runs[0].run_id
        [run_span] = [span for span in sent.spans if (span.attributes or {}).get(semconv.RUN_ID) == run_id][:1]
        assert run_span.context is not None
        yield Stored(collector, trace_id, run_id, format(run_span.context.trace_id, "032x"))


def by_name(view: TraceView) -> dict[str, TraceNode]:
    return {node.name: node for node in view.nodes()}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="agentwatch")
    add_read_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.handler(args)
    out, err = capsys.readouterr()
    return code, out, err


# --- the function ---------------------------------------------------------------------------------


def test_a_foreign_trace_reads_as_a_tree_by_its_trace_id(stored: Stored) -> None:
    store = stored.collector.store
    view = get_trace(store, stored.trace_id, tenant="acme")
    assert view is not None
    # no agentwatch run in it, but the collector read one from it: the trace is the run
    run = view.run
    assert run is not None
    assert (run.run_id, run.trace_id, run.agent, run.runtime, run.stop_reason) == (
        stored.trace_id,
        stored.trace_id,
        "rag-app",
        "langgraph",
        "completed",  # the refused refund is a failed tool call, not a failed run
    )
    assert (run.llm_calls, run.tool_calls, run.input_tokens, run.output_tokens) == (2, 2, 142, 27)
    assert (view.trace_id, view.span_count, view.truncated) == (stored.trace_id, 5, False)
    [root] = view.roots
    assert root.name == "RunnableSequence"
    assert [child.name for child in root.children] == [
        "ChatOpenAI",
        "lookup_order",
        "chat gpt-4o",
        "execute_tool refund",
    ]
    nodes = by_name(view)
    assert root.kind == "run"  # the span the collector read the run from
    assert root.attributes["openinference.span.kind"] == "CHAIN"
    assert root.service_name == "rag-app"
    oi_llm, oi_tool, chat, refund = (
        nodes[name] for name in ("ChatOpenAI", "lookup_order", "chat gpt-4o", "execute_tool refund")
    )
    assert (oi_llm.kind, oi_llm.span_kind) == ("llm", "Client")
    assert oi_llm.attributes["llm.model_name"] == "gpt-4o-mini"
    assert (oi_llm.attributes["llm.token_count.prompt"], oi_llm.attributes["llm.token_count.completion"]) == ("42", "7")
    assert oi_tool.kind == "tool"
    assert oi_tool.attributes["tool.name"] == "lookup_order"
    assert [event.name for event in oi_tool.events] == ["retry", "retry"]
    assert chat.kind == "llm"
    assert chat.attributes[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert chat.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == "100"
    assert (refund.kind, refund.status, refund.status_message) == ("tool", "Error", "refund refused")
    assert refund.attributes[semconv.GEN_AI_TOOL_NAME] == "refund"
    assert all(node.duration_ms >= 0 for node in view.nodes())
    # content only when asked, and as redacted at ingest
    assert all(node.content == {} for node in view.nodes())
    assert "input.value" not in root.attributes
    assert semconv.GEN_AI_TOOL_CALL_ARGUMENTS not in refund.attributes
    with_content = get_trace(store, stored.trace_id.upper(), tenant="acme", content=True)
    assert with_content is not None
    nodes = by_name(with_content)
    assert nodes["RunnableSequence"].content == {"input.value": "refund the order of [REDACTED:email]"}
    assert API_KEY not in nodes["lookup_order"].content["input.value"]
    assert "[REDACTED" in nodes["lookup_order"].content["input.value"]
    assert nodes["execute_tool refund"].content[semconv.GEN_AI_TOOL_CALL_RESULT] == "refused"
    assert EMAIL not in json.dumps(with_content.to_dict())
    assert TraceView.from_dict(with_content.to_dict()).to_dict() == with_content.to_dict()


def test_a_trace_id_is_confined_to_its_tenant(stored: Stored) -> None:
    store = stored.collector.store
    assert get_trace(store, stored.trace_id, tenant="globex") is None
    assert get_trace_by_id(store, stored.trace_id, tenant="globex") is None
    assert get_trace(store, stored.trace_id) is not None  # no tenant (auth off): every tenant's spans
    assert get_trace_by_id(store, "0" * 32) is None
    assert get_trace_by_id(store, "ab" * 16) is None
    assert get_trace(store, "not-a-trace-id") is None
    assert not is_trace_id("0" * 32)
    assert not is_trace_id(stored.trace_id + "0")
    assert is_trace_id(stored.trace_id.upper())


def test_a_run_id_works_as_before_and_its_trace_id_finds_the_run(stored: Stored) -> None:
    store = stored.collector.store
    by_run = get_trace(store, stored.run_id, tenant="acme")
    assert by_run is not None
    assert by_run.run is not None
    assert by_run.run.run_id == stored.run_id
    assert by_run.trace_id == stored.run_trace_id
    assert by_run.roots[0].kind == "run"
    assert set(by_run.to_dict()) == {"trace_id", "run", "start_time", "duration_ms", "span_count", "truncated", "roots"}
    by_trace = get_trace(store, stored.run_trace_id, tenant="acme")
    assert by_trace is not None
    assert by_trace.run is not None
    assert by_trace.run.run_id == stored.run_id
    assert by_trace.span_count == by_run.span_count
    assert render_trace(by_trace) == render_trace(by_run)
    assert get_trace(store, stored.run_id, tenant="globex") is None


# --- rendering, the command, the read API ---------------------------------------------------------


def test_render_shows_foreign_spans_and_content_only_when_asked(stored: Stored) -> None:
    view = get_trace(stored.collector.store, stored.trace_id, content=True)
    assert view is not None
    text = render_trace(view)
    lines = text.splitlines()
    # the header of the run the collector read from the trace (the trace is the run)
    assert lines[0].startswith(f"run {stored.trace_id}  agent=rag-app")
    line = {
        name: next(row for row in lines if f" {name}" in row)
        for name in ("ChatOpenAI", "lookup_order", "chat gpt-4o", "execute_tool refund", "RunnableSequence")
    }
    assert "openinference=CHAIN" in line["RunnableSequence"]
    assert "model=gpt-4o-mini" in line["ChatOpenAI"]
    assert "tokens=42/7" in line["ChatOpenAI"]
    assert "(client)" in line["ChatOpenAI"]
    assert "openinference=TOOL" in line["lookup_order"]  # the tool name is the span name: not repeated
    assert "!retry×2" in line["lookup_order"]
    assert "model=gpt-4o-2024-08-06" in line["chat gpt-4o"]
    assert "tokens=100/20" in line["chat gpt-4o"]
    assert "ERROR refund refused" in line["execute_tool refund"]
    assert "REDACTED" not in text  # content hidden by default
    shown = render_trace(view, content=True)
    assert "» input.value: refund the order of [REDACTED:email]" in shown
    assert "» input.value: Which order?\\nThe last one." in shown
    assert f"» {semconv.GEN_AI_TOOL_CALL_ARGUMENTS}: " in shown
    assert EMAIL not in shown
    assert API_KEY not in shown
    long_line = next(row for row in shown.splitlines() if "» output.value: xxx" in row)
    assert long_line.endswith("…")
    assert len(long_line.split("» output.value: ")[1]) == 160


def test_the_trace_command_takes_a_trace_id(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    url = stored.collector.base_url
    code, out, err = run_cli(["trace", stored.trace_id, "--collector", url, "--token", TOKENS["acme"]], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"run {stored.trace_id}")
    assert "RunnableSequence" in out
    assert "└─ execute_tool refund" in out
    assert "REDACTED" not in out
    code, out, err = run_cli(
        ["trace", stored.trace_id, "--collector", url, "--token", TOKENS["acme"], "--content"], capsys
    )
    assert (code, err) == (0, "")
    assert "[REDACTED:email]" in out
    assert EMAIL not in out
    code, out, _ = run_cli(["trace", stored.trace_id, "--collector", url, "--token", TOKENS["acme"], "--json"], capsys)
    assert code == 0
    document = json.loads(out)["trace"]
    assert document["run"]["run_id"] == stored.trace_id
    assert document["span_count"] == 5
    # another tenant's trace does not exist for its token; an unknown id is the same answer
    code, out, err = run_cli(["trace", stored.trace_id, "--collector", url, "--token", TOKENS["globex"]], capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"agentwatch trace: no run or trace '{stored.trace_id}'")
    code, _, err = run_cli(["trace", "nope", "--collector", url, "--token", TOKENS["acme"]], capsys)
    assert code == 1
    assert err.startswith("agentwatch trace: no run 'nope'")
    # a run id: the same tree as before
    code, out, err = run_cli(["trace", stored.run_id, "--collector", url, "--token", TOKENS["acme"]], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"run {stored.run_id}")
    assert "stop=" in out


def test_the_read_api_takes_a_trace_id(stored: Stored) -> None:
    collector = stored.collector
    for path in (f"/api/v1/traces/{stored.trace_id}", f"/api/v1/runs/{stored.trace_id}/trace"):
        reply = collector.get(path, bearer("acme"))
        assert reply.status == 200, reply.body
        trace = reply.json()["trace"]
        assert (trace["trace_id"], trace["run"]["run_id"], trace["span_count"]) == (stored.trace_id, stored.trace_id, 5)
        [root] = trace["roots"]
        assert root["name"] == "RunnableSequence"
        assert all(child["content"] == {} for child in root["children"])
        shown = collector.get(path + "?content=true", bearer("acme")).json()["trace"]
        assert shown["roots"][0]["content"] == {"input.value": "refund the order of [REDACTED:email]"}
        hidden = collector.get(path, bearer("globex"))
        assert hidden.status == 404
        assert collector.get(path + "?content=true", bearer("globex")).status == 404
        assert collector.get(path + "?content=maybe", bearer("acme")).status == 400
        assert collector.get(path + "?tenant=globex", bearer("acme")).status == 403
        assert collector.get(path, {}).status == 401
    assert collector.get(f"/api/v1/runs/{stored.trace_id}/trace", bearer("globex")).json() == {"error": "no such run"}
    assert collector.get("/api/v1/traces/not-a-trace", bearer("acme")).status == 404
    # a run id through the run route, and the run's trace id through the trace route
    by_run = collector.get(f"/api/v1/runs/{stored.run_id}/trace", bearer("acme")).json()["trace"]
    assert by_run["run"]["run_id"] == stored.run_id
    by_trace = collector.get(f"/api/v1/traces/{stored.run_trace_id}", bearer("acme")).json()["trace"]
    assert by_trace["run"]["run_id"] == stored.run_id
    assert by_trace["span_count"] == by_run["span_count"]
