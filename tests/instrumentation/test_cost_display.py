"""Unpriced cost reads as unknown, never $0, in `runs`, `trace` and the demo; sub-cent costs keep their digits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from _telemetry import Telemetry

from agentwatch.collectors.demo.summary import render, summarize
from agentwatch.collectors.read.models import RunSummary, TraceNode
from agentwatch.collectors.read.render import describe, format_cost, format_usd, render_runs
from agentwatch.instrumentation import Budget, semconv


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "$0.0000"),
        (0.00015, "$0.000150"),
        (0.0000042, "$0.00000420"),
        (0.0042, "$0.00420"),
        (0.0123, "$0.0123"),
        (1.5, "$1.5000"),
        (1234.5, "$1,234.50"),
    ],
)
def test_format_usd_keeps_sub_cent_digits(value: float, text: str) -> None:
    assert format_usd(value) == text


def test_format_cost_marks_unpriced() -> None:
    assert format_cost(0.0, 0) == "$0.0000"
    assert format_cost(0.0, 2) == "unknown"
    assert format_cost(0.0123, 1) == "≥$0.0123 + unpriced"


def _run_summary(**overrides: Any) -> RunSummary:
    moment = datetime(2026, 12, 1, tzinfo=UTC).isoformat()
    data: dict[str, Any] = {
        **dict.fromkeys(("run_id", "tenant", "agent", "version", "track", "runtime", "stop_reason"), "x"),
        **dict.fromkeys(("budget_exhausted", "trace_id", "span_id", "parent_run_id"), ""),
        **dict.fromkeys(("conversation_id", "service_name", "status_code"), ""),
        **dict.fromkeys(("steps", "tool_calls", "llm_calls", "input_tokens", "output_tokens"), 0),
        "unpriced_llm_calls": 0,
        "duration_s": 0.5,
        "cost_usd": 0.0,
        "start_time": moment,
        "end_time": moment,
    }
    data.update(overrides)
    return RunSummary.from_dict(data)


def test_runs_table_shows_unknown_for_unpriced_runs() -> None:
    table = render_runs(
        [
            _run_summary(run_id="priced", cost_usd=0.00015),
            _run_summary(run_id="unpriced", unpriced_llm_calls=1),
            _run_summary(run_id="partial", cost_usd=0.02, unpriced_llm_calls=1),
        ]
    )
    lines = {line.split()[2]: line for line in table.splitlines()[1:]}
    assert "$0.000150" in lines["priced"]
    assert "unknown" in lines["unpriced"]
    assert "$0.0000" not in lines["unpriced"]
    assert "≥$0.0200 + unpriced" in lines["partial"]


def _node(kind: str, attributes: dict[str, str]) -> TraceNode:
    return TraceNode(
        span_id="s",
        parent_span_id="",
        name=kind,
        kind=kind,
        span_kind="Internal",
        service_name="svc",
        start_offset_ms=0.0,
        duration_ms=1.0,
        status="Unset",
        status_message="",
        attributes=attributes,
    )


def test_trace_lines_show_unknown_cost() -> None:
    llm = describe(_node("llm", {semconv.GEN_AI_REQUEST_MODEL: "my-ft", semconv.COST_UNPRICED: "true"}))
    assert "cost=unknown" in llm
    assert "$" not in llm
    priced = describe(_node("llm", {semconv.GEN_AI_REQUEST_MODEL: "gpt-4o", semconv.COST_USD: "0.00015"}))
    assert "cost=$0.000150" in priced
    run_attrs = {semconv.RUN_ID: "r", semconv.STOP_REASON: "completed", semconv.RUN_COST_USD: "0.0"}
    assert "cost=$0.0000" in describe(_node("run", run_attrs))
    run_attrs[semconv.RUN_COST_UNPRICED] = "true"
    assert "cost=unknown" in describe(_node("run", run_attrs))
    run_attrs[semconv.RUN_COST_USD] = "0.5"
    run_attrs[semconv.RUN_UNPRICED_LLM_CALLS] = "2"
    assert "cost=≥$0.5000 + unpriced" in describe(_node("run", run_attrs))


def test_demo_summary_shows_unpriced_cost_as_unknown(telemetry: Telemetry) -> None:
    with telemetry.run(tenant_id="acme", budget=Budget(max_usd=1.0, allow_unpriced=True)) as run:
        run.record_llm_call(model="my-private-model-xyz", input_tokens=10, output_tokens=10)
    with telemetry.run(tenant_id="globex") as run:
        run.record_llm_call(model="gpt-4o", input_tokens=10, output_tokens=10)
    summary = summarize(telemetry.spans())
    rows = {row.tenant_id: row for row in summary.runs}
    assert rows["acme"].unpriced_llm_calls == 1
    assert rows["acme"].cost_label == "unknown"
    assert rows["globex"].cost_label == f"{rows['globex'].cost_usd:.5f}"
    text = render(summary, width=200)
    acme = next(line for line in text.splitlines() if line.startswith("acme"))
    assert "unknown" in acme
    assert "0.00000" not in acme
    assert "total cost:     ≥$" in text
    assert "1 run(s) called unpriced models" in text
