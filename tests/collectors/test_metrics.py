"""Prometheus metrics derived from span rows: exact values, bounded labels, own registry, promtool-clean.

Rows come from two sources: built by hand (to pin every rule) and rendered from the spans the
real instrumentation exports when the custom-loop example runs its five scenarios (to prove the
metrics agree with what the telemetry carries).
"""

from __future__ import annotations

import ast
import base64
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import pytest
from _paths import REPO
from _telemetry import Telemetry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from prometheus_client import REGISTRY, generate_latest

from agentwatch.collectors import metric_names as m
from agentwatch.collectors import metrics as metrics_package
from agentwatch.collectors._examples import load_example
from agentwatch.collectors.demo.summary import summarize
from agentwatch.collectors.metrics import CONTENT_TYPE, CollectorMetrics
from agentwatch.instrumentation import semconv as sc

ROOT = REPO
Row = dict[str, object]

# The contract of DESIGN.md, retyped on purpose: the constants must match it.
EXPECTED_FAMILIES = {
    "agentwatch_runs_total": ("counter", {"agent", "track", "stop_reason"}),
    "agentwatch_run_duration_seconds": ("histogram", {"agent", "track"}),
    "agentwatch_run_steps": ("histogram", {"agent", "track"}),
    "agentwatch_run_tool_calls": ("histogram", {"agent", "track"}),
    "agentwatch_run_cost_usd": ("histogram", {"agent", "track"}),
    "agentwatch_cost_usd_total": ("counter", {"agent", "track"}),
    "agentwatch_llm_tokens_total": ("counter", {"agent", "track", "model", "direction"}),
    "agentwatch_tool_calls_total": ("counter", {"agent", "track", "tool", "disposition", "outcome"}),
    "agentwatch_budget_exhausted_total": ("counter", {"agent", "track", "budget"}),
    "agentwatch_agent_info": ("gauge", {"agent", "track", "version"}),
    "agentwatch_canary_drift_evalue": ("gauge", {"agent", "metric"}),
    "agentwatch_canary_verdict": ("gauge", {"agent", "metric"}),
    "agentwatch_collector_spans_received_total": ("counter", {"transport"}),
    "agentwatch_collector_spans_written_total": ("counter", set()),
    "agentwatch_collector_spans_rejected_total": ("counter", {"reason"}),
    "agentwatch_collector_spans_dropped_total": ("counter", {"reason"}),
    "agentwatch_collector_requests_total": ("counter", {"transport", "code"}),
    "agentwatch_collector_queue_spans": ("gauge", set()),
    "agentwatch_collector_spool_bytes": ("gauge", set()),
    "agentwatch_collector_spool_spans": ("gauge", set()),
    "agentwatch_collector_spool_capacity_bytes": ("gauge", set()),
    "agentwatch_collector_spool_reclaimed_bytes_total": ("counter", set()),
    "agentwatch_collector_spool_disk_full_total": ("counter", set()),
    "agentwatch_collector_insert_duration_seconds": ("histogram", set()),
    "agentwatch_collector_insert_failures_total": ("counter", set()),
    "agentwatch_collector_store_up": ("gauge", set()),
    "agentwatch_collector_request_body_bytes": ("histogram", {"transport"}),
    "agentwatch_collector_drift_evaluations_total": ("counter", {"result"}),
}
ID_LABELS = {"run_id", "trace_id", "span_id", "tenant", "tenant_id", "user", "user_id", "conversation_id", "call_id"}


# --- helpers: rows the way the collector builds them ------------------------------------------


def render(value: object) -> str:
    """An attribute value as the contract stores it (the OTel Collector ClickHouse exporter's rendering)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Sequence):
        return json.dumps(list(value), separators=(",", ":"))
    raise TypeError(f"not an attribute value: {value!r}")


def _rendered(attributes: Mapping[str, object] | None) -> dict[str, str]:
    return {key: render(value) for key, value in (attributes or {}).items()}


def _timestamp(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def span_row(span: ReadableSpan) -> Row:
    """A finished SDK span as a row of the shared contract."""
    start, end = span.start_time or 0, span.end_time or 0
    context, parent = span.get_span_context(), span.parent
    assert context is not None
    return {
        "Timestamp": _timestamp(start),
        "TraceId": f"{context.trace_id:032x}",
        "SpanId": f"{context.span_id:016x}",
        "ParentSpanId": f"{parent.span_id:016x}" if parent else "",
        "TraceState": "",
        "SpanName": span.name,
        "SpanKind": span.kind.name.title(),
        "ServiceName": str(span.resource.attributes.get("service.name", "")),
        "ResourceAttributes": _rendered(span.resource.attributes),
        "ScopeName": span.instrumentation_scope.name if span.instrumentation_scope else "",
        "ScopeVersion": (span.instrumentation_scope.version or "") if span.instrumentation_scope else "",
        "SpanAttributes": _rendered(span.attributes),
        "Duration": end - start,
        "StatusCode": span.status.status_code.name.title(),
        "StatusMessage": span.status.description or "",
        "Events.Timestamp": [_timestamp(event.timestamp) for event in span.events],
        "Events.Name": [event.name for event in span.events],
        "Events.Attributes": [_rendered(event.attributes) for event in span.events],
        "Links.TraceId": [f"{link.context.trace_id:032x}" for link in span.links],
        "Links.SpanId": [f"{link.context.span_id:016x}" for link in span.links],
        "Links.TraceState": ["" for _ in span.links],
        "Links.Attributes": [_rendered(link.attributes) for link in span.links],
    }


def row(attributes: Mapping[str, str], duration_ns: int = 1_000_000) -> Row:
    """A hand-built row: only the columns the metrics read matter, the rest are plausible."""
    return {
        "Timestamp": "1732431234.000000123",
        "TraceId": "0" * 31 + "1",
        "SpanId": "0" * 15 + "1",
        "ParentSpanId": "",
        "SpanName": "span",
        "SpanKind": "Internal",
        "ServiceName": "svc",
        "SpanAttributes": dict(attributes),
        "Duration": duration_ns,
        "StatusCode": "Unset",
    }


def run_row(
    agent: str = "support",
    *,
    track: str = "stable",
    stop_reason: str = "completed",
    steps: str = "3",
    tool_calls: str = "2",
    cost: str = "0.25",
    version: str = "v1",
    duration_ns: int = 2_500_000_000,
    **extra: str,
) -> Row:
    attributes = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
        sc.GEN_AI_AGENT_NAME: agent,
        sc.GEN_AI_AGENT_VERSION: version,
        sc.RUN_ID: f"run-{agent}-{stop_reason}",
        sc.TENANT_ID: "tenant-secret-7",
        sc.TRACK: track,
        sc.STOP_REASON: stop_reason,
        sc.RUN_STEPS: steps,
        sc.RUN_TOOL_CALLS: tool_calls,
        sc.RUN_COST_USD: cost,
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",  # some runtimes name the model on the run span too
        sc.GEN_AI_USAGE_INPUT_TOKENS: "999999",  # run totals: must not be counted again
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: "999999",
    }
    attributes.update({key.replace("__", "."): value for key, value in extra.items()})
    return row(attributes, duration_ns)


def tool_row(tool: str, disposition: str = "allowed", outcome: str = "ok", agent: str = "support") -> Row:
    return row(
        {
            sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
            sc.GEN_AI_AGENT_NAME: agent,
            sc.RUN_ID: "run-1",
            sc.TRACK: "stable",
            sc.GEN_AI_TOOL_NAME: tool,
            sc.GEN_AI_TOOL_CALL_ID: "call_abc",
            sc.TOOL_DISPOSITION: disposition,
            sc.TOOL_OUTCOME: outcome,
        }
    )


def llm_row(model: str, input_tokens: str, output_tokens: str, *, agent: str = "support", **extra: str) -> Row:
    attributes = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
        sc.GEN_AI_AGENT_NAME: agent,
        sc.RUN_ID: "run-1",
        sc.TRACK: "canary",
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
    }
    attributes.update(extra)
    return row(attributes)


def value(metrics: CollectorMetrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def label_values(metrics: CollectorMetrics, family: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for metric in metrics.registry.collect()
        for sample in metric.samples
        if sample.name.startswith(family) and label in sample.labels
    }


def all_samples(metrics: CollectorMetrics) -> Iterable[tuple[str, Mapping[str, str], float]]:
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            yield sample.name, sample.labels, sample.value


def promtool_check(exposition: bytes) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None and os.environ.get("CI") != "true":
        pytest.skip("promtool is not installed (apt install prometheus)")
    return subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def scenario_rows(telemetry: Telemetry) -> list[Row]:
    """Rows of the five custom-loop scenarios, as exported by the real instrumentation."""
    load_example("custom_agent").run_scenarios(tracer_provider=telemetry.provider)
    return [span_row(span) for span in telemetry.spans()]


# --- the contract ---------------------------------------------------------------------------


def test_constants_are_the_contract_names() -> None:
    constants = {*m.AGENT_METRICS, *m.COLLECTOR_METRICS}
    assert constants == set(EXPECTED_FAMILIES)
    assert m.RUNS_TOTAL == "agentwatch_runs_total"
    assert m.CANARY_VERDICT == "agentwatch_canary_verdict"


def test_exposed_families_types_and_labels(scenario_rows: list[Row]) -> None:
    metrics = CollectorMetrics()
    _touch_everything(metrics, scenario_rows)
    text = metrics.exposition().decode()
    for name, (kind, labels) in EXPECTED_FAMILIES.items():
        assert f"# TYPE {name} {kind}\n" in text, name
        seen = {
            key for family, sample_labels, _ in all_samples(metrics) if family.startswith(name) for key in sample_labels
        }
        assert seen - {"le"} == labels, name
    assert "_created" not in text, "created series double the series count and are never queried"


def test_module_imports_only_stdlib_prometheus_and_semconv() -> None:
    """Every module of the package, alike: the metric names come from ``metric_names``, never re-exported."""
    paths = sorted((ROOT / "collectors" / "agentwatch" / "collectors" / "metrics").glob("*.py"))
    assert {path.name for path in paths} > {"__init__.py"}
    defined: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import"
                assert node.module
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        for name in imported:
            top = name.split(".")[0]
            ok = (
                top in sys.stdlib_module_names
                or top == "prometheus_client"
                or name == "agentwatch.instrumentation.semconv"
                or name.startswith("agentwatch.collectors.metric_names.")
                or name.startswith("agentwatch.collectors.metrics.")  # the package's own modules
            )
            assert ok, f"{path.name}: {name}"
        for node in tree.body:
            if isinstance(node, ast.AnnAssign | ast.Assign):
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                defined.update(t.id for t in targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.ClassDef | ast.FunctionDef):
                defined.add(node.name)
    # every public constant, class and function defined in the package is exported (dashboards import them)
    public = {name for name in defined if not name.startswith("_")} - {"__all__"}
    assert set(metrics_package.__all__) == public


# --- derivation from hand-built rows ---------------------------------------------------------


def test_runs_tools_tokens_from_hand_built_rows() -> None:
    metrics = CollectorMetrics()
    metrics.observe_rows(
        [
            run_row(duration_ns=2_500_000_000),
            run_row(
                stop_reason="max_tool_calls", tool_calls="12", cost="0.5", agentwatch__budget__exhausted="tool_calls"
            ),
            run_row(track="canary", version="v2", steps="30", cost="0.0002", duration_ns=500_000_000),
            tool_row("kb.search"),
            tool_row("kb.search"),
            tool_row("db.drop_table", "denied", "blocked"),
            llm_row("gpt-4o-mini", "1000", "50"),
            llm_row("gpt-4o-mini", "500", "25", **{sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18"}),
            llm_row("gpt-4o-mini", "7", "3"),
        ]
    )
    s, c = {"agent": "support", "track": "stable"}, {"agent": "support", "track": "canary"}
    assert value(metrics, m.RUNS_TOTAL, **s, stop_reason="completed") == 1
    assert value(metrics, m.RUNS_TOTAL, **s, stop_reason="max_tool_calls") == 1
    assert value(metrics, m.RUNS_TOTAL, **c, stop_reason="completed") == 1
    assert value(metrics, m.BUDGET_EXHAUSTED_TOTAL, **s, budget="tool_calls") == 1
    assert value(metrics, m.BUDGET_EXHAUSTED_TOTAL, **c, budget="tool_calls") == 0
    assert value(metrics, m.COST_USD_TOTAL, **s) == pytest.approx(0.75)
    assert value(metrics, m.COST_USD_TOTAL, **c) == pytest.approx(0.0002)
    assert value(metrics, m.RUN_DURATION_SECONDS + "_sum", **s) == pytest.approx(5.0)
    assert value(metrics, m.RUN_DURATION_SECONDS + "_count", **s) == 2
    assert value(metrics, m.RUN_DURATION_SECONDS + "_bucket", **c, le="0.5") == 1
    assert value(metrics, m.RUN_STEPS + "_sum", **s) == 6
    assert value(metrics, m.RUN_STEPS + "_bucket", **c, le="30.0") == 1
    assert value(metrics, m.RUN_STEPS + "_bucket", **c, le="20.0") == 0
    assert value(metrics, m.RUN_TOOL_CALLS + "_sum", **s) == 14
    assert value(metrics, m.RUN_COST_USD + "_bucket", **c, le="0.0003") == 1
    assert value(metrics, m.RUN_COST_USD + "_bucket", **c, le="0.0001") == 0
    assert value(metrics, m.AGENT_INFO, **s, version="v1") == 1
    assert value(metrics, m.AGENT_INFO, **c, version="v2") == 1
    assert value(metrics, m.TOOL_CALLS_TOTAL, **s, tool="kb.search", disposition="allowed", outcome="ok") == 2
    assert value(metrics, m.TOOL_CALLS_TOTAL, **s, tool="db.drop_table", disposition="denied", outcome="blocked") == 1
    # the response model wins over the request model; run-span totals are not counted twice
    assert value(metrics, m.LLM_TOKENS_TOTAL, **c, model="gpt-4o-mini", direction="input") == 1007
    assert value(metrics, m.LLM_TOKENS_TOTAL, **c, model="gpt-4o-mini", direction="output") == 53
    assert value(metrics, m.LLM_TOKENS_TOTAL, **c, model="gpt-4o-mini-2024-07-18", direction="input") == 500
    assert label_values(metrics, m.LLM_TOKENS_TOTAL, "track") == {"canary"}


def test_counters_accumulate_across_batches() -> None:
    metrics = CollectorMetrics()
    for _ in range(3):
        metrics.observe_rows([run_row(), tool_row("kb.search"), llm_row("m", "10", "1")])
    assert value(metrics, m.RUNS_TOTAL, agent="support", track="stable", stop_reason="completed") == 3
    assert value(metrics, m.LLM_TOKENS_TOTAL, agent="support", track="canary", model="m", direction="input") == 30
    assert (
        value(
            metrics,
            m.TOOL_CALLS_TOTAL,
            agent="support",
            track="stable",
            tool="kb.search",
            disposition="allowed",
            outcome="ok",
        )
        == 3
    )


def test_spans_without_agentwatch_attributes_produce_nothing() -> None:
    metrics = CollectorMetrics()
    foreign = {
        sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_USAGE_INPUT_TOKENS: "100",
        sc.GEN_AI_AGENT_NAME: "someone-elses-agent",
    }
    run_without_id = dict(cast(Mapping[str, str], run_row()["SpanAttributes"]))
    del run_without_id[sc.RUN_ID]
    run_without_reason = dict(cast(Mapping[str, str], run_row()["SpanAttributes"]))
    run_without_reason[sc.STOP_REASON] = ""
    metrics.observe_rows(
        [
            row({"http.request.method": "GET"}),
            row(foreign),
            row(run_without_id),
            row(run_without_reason),
            row({sc.RUN_ID: "r", sc.GEN_AI_OPERATION_NAME: sc.OP_STEP, sc.STEP_INDEX: "1"}),
            row({sc.RUN_ID: "r", sc.OPERATION_NAME: sc.OP_STEP, sc.STEP_INDEX: "2"}),  # this version's step
        ]
    )
    agent_samples = [s for s in all_samples(metrics) if s[0].startswith(tuple(m.AGENT_METRICS))]
    assert agent_samples == []


def test_token_spans_of_other_operations_need_a_model() -> None:
    metrics = CollectorMetrics()
    usage = {sc.RUN_ID: "r", sc.GEN_AI_AGENT_NAME: "a", sc.TRACK: "stable", sc.GEN_AI_USAGE_INPUT_TOKENS: "40"}
    metrics.observe_rows(
        [
            row({**usage, sc.GEN_AI_OPERATION_NAME: "text_completion", sc.GEN_AI_RESPONSE_MODEL: "davinci"}),
            row({**usage, sc.GEN_AI_OPERATION_NAME: "text_completion"}),  # no model: not attributable
            row({**usage, sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT}),  # chat without a model: model "unknown"
        ]
    )
    assert value(metrics, m.LLM_TOKENS_TOTAL, agent="a", track="stable", model="davinci", direction="input") == 40
    assert value(metrics, m.LLM_TOKENS_TOTAL, agent="a", track="stable", model="unknown", direction="input") == 40
    assert sum(v for n, _, v in all_samples(metrics) if n == m.LLM_TOKENS_TOTAL) == 80


# --- derivation from the real instrumentation ------------------------------------------------


def test_scenarios_of_the_real_instrumentation(telemetry: Telemetry, scenario_rows: list[Row]) -> None:
    metrics = CollectorMetrics()
    metrics.observe_rows(scenario_rows)
    labels = {"agent": "support", "track": "stable"}
    runs = {reason: value(metrics, m.RUNS_TOTAL, **labels, stop_reason=reason) for reason in sc.STOP_REASONS}
    assert {k: v for k, v in runs.items() if v} == {
        "completed": 2,
        "max_tool_calls": 1,
        "policy_denied": 1,
        "approval_rejected": 1,
    }
    assert value(metrics, m.BUDGET_EXHAUSTED_TOTAL, **labels, budget="tool_calls") == 1
    assert value(metrics, m.AGENT_INFO, **labels, version="v1") == 1

    summary = summarize(telemetry.spans())  # the demo's reading of the same spans
    for (tool, disposition, outcome), calls in summary.gateway.items():
        sample = value(metrics, m.TOOL_CALLS_TOTAL, **labels, tool=tool, disposition=disposition, outcome=outcome)
        assert sample == calls, (tool, disposition, outcome)
    assert value(metrics, m.TOOL_CALLS_TOTAL, **labels, tool="kb.search", disposition="allowed", outcome="ok") == 12
    assert value(metrics, m.COST_USD_TOTAL, **labels) == pytest.approx(summary.total_cost_usd, rel=1e-12)
    assert value(metrics, m.RUN_STEPS + "_sum", **labels) == sum(run.steps for run in summary.runs)
    assert value(metrics, m.RUN_TOOL_CALLS + "_sum", **labels) == sum(run.tool_calls for run in summary.runs)
    durations = [(s.end_time or 0) - (s.start_time or 0) for s in telemetry.runs()]
    assert value(metrics, m.RUN_DURATION_SECONDS + "_count", **labels) == 5
    assert value(metrics, m.RUN_DURATION_SECONDS + "_sum", **labels) == pytest.approx(sum(durations) / 1e9)

    # tokens counted from the LLM spans add up to the totals each run span reports
    for direction, key in (("input", sc.GEN_AI_USAGE_INPUT_TOKENS), ("output", sc.GEN_AI_USAGE_OUTPUT_TOKENS)):
        run_totals = sum(int(render((s.attributes or {})[key])) for s in telemetry.runs())
        counted = value(metrics, m.LLM_TOKENS_TOTAL, **labels, model="gpt-4o-mini", direction=direction)
        assert counted == run_totals > 0


def test_no_ids_become_labels(telemetry: Telemetry, scenario_rows: list[Row]) -> None:
    metrics = CollectorMetrics()
    metrics.observe_rows(scenario_rows)
    metrics.observe_rows([run_row()])  # a tenant id of its own
    text = metrics.exposition().decode()
    ids: set[str] = {"tenant-secret-7"}
    for scenario_row in scenario_rows:
        attributes = cast(Mapping[str, str], scenario_row["SpanAttributes"])
        ids.update({cast(str, scenario_row["TraceId"]), cast(str, scenario_row["SpanId"])})
        for key in (sc.RUN_ID, sc.TENANT_ID, sc.GEN_AI_TOOL_CALL_ID, sc.TOOL_IDEMPOTENCY_KEY):
            if attributes.get(key):
                ids.add(attributes[key])
    assert len(ids) > 20
    leaked = sorted(identifier for identifier in ids if f'"{identifier}"' in text or identifier in text)
    assert leaked == []
    names = {key for _, labels, _ in all_samples(metrics) for key in labels}
    assert not names & ID_LABELS


# --- bounded labels ------------------------------------------------------------------------


def test_sixty_tools_become_fifty_and_other() -> None:
    metrics = CollectorMetrics()
    metrics.observe_rows([tool_row(f"tool.{i:02d}") for i in range(60)])
    metrics.observe_rows([tool_row("tool.05"), tool_row("tool.55")])  # known stays known, late stays other
    tools = label_values(metrics, m.TOOL_CALLS_TOTAL, "tool")
    assert len(tools) == 51
    assert tools == {f"tool.{i:02d}" for i in range(50)} | {"other"}
    allowed = {"agent": "support", "track": "stable", "disposition": "allowed", "outcome": "ok"}
    assert value(metrics, m.TOOL_CALLS_TOTAL, **allowed, tool="other") == 11
    assert value(metrics, m.TOOL_CALLS_TOTAL, **allowed, tool="tool.05") == 2
    # the cap is per agent: another agent still gets its own names
    metrics.observe_rows([tool_row("tool.59", agent="billing")])
    assert value(metrics, m.TOOL_CALLS_TOTAL, **{**allowed, "agent": "billing"}, tool="tool.59") == 1


def test_models_versions_and_agents_are_capped() -> None:
    metrics = CollectorMetrics(max_models_per_agent=2, max_versions_per_agent=2, max_agents=3)
    metrics.observe_rows([llm_row(f"model-{i}", "1", "0") for i in range(5)])
    assert label_values(metrics, m.LLM_TOKENS_TOTAL, "model") == {"model-0", "model-1", "other"}
    assert value(metrics, m.LLM_TOKENS_TOTAL, agent="support", track="canary", model="other", direction="input") == 3
    metrics.observe_rows([run_row(version=f"v{i}") for i in range(4)])
    assert label_values(metrics, m.AGENT_INFO, "version") == {"v0", "v1", "other"}
    metrics.observe_rows([run_row(f"agent-{i}") for i in range(5)])
    agents = label_values(metrics, m.RUNS_TOTAL, "agent")
    assert agents == {"support", "agent-0", "agent-1", "other"}
    assert value(metrics, m.RUNS_TOTAL, agent="other", track="stable", stop_reason="completed") == 3


def test_unknown_enum_values_become_other_and_are_counted() -> None:
    metrics = CollectorMetrics()
    metrics.observe_rows(
        [
            run_row(stop_reason="exploded"),
            run_row(stop_reason="exploded"),
            run_row(track="blue", agentwatch__budget__exhausted="tokens"),
            tool_row("kb.search", disposition="maybe", outcome="sort-of"),
        ]
    )
    assert value(metrics, m.RUNS_TOTAL, agent="support", track="stable", stop_reason="other") == 2
    assert value(metrics, m.RUNS_TOTAL, agent="support", track="other", stop_reason="completed") == 1
    assert value(metrics, m.BUDGET_EXHAUSTED_TOTAL, agent="support", track="other", budget="other") == 1
    tool = {"agent": "support", "track": "stable", "tool": "kb.search"}
    assert value(metrics, m.TOOL_CALLS_TOTAL, **tool, disposition="other", outcome="other") == 1


def test_names_are_cleaned() -> None:
    metrics = CollectorMetrics()
    long_name = "x" * 500
    metrics.observe_rows([run_row(""), tool_row(long_name), tool_row("bad\nname\x00\ud800"), tool_row("")])
    assert value(metrics, m.RUNS_TOTAL, agent="unknown", track="stable", stop_reason="completed") == 1
    tools = label_values(metrics, m.TOOL_CALLS_TOTAL, "tool")
    assert tools == {"x" * m.MAX_LABEL_LENGTH, "bad_name__", "unknown"}
    metrics.exposition()  # a lone surrogate would make the UTF-8 encoding raise


def test_malformed_numbers_are_skipped_not_raised() -> None:
    metrics = CollectorMetrics()
    run_attributes = cast(Mapping[str, object], run_row(track="canary")["SpanAttributes"])
    metrics.observe_rows(
        [
            run_row(steps="many", tool_calls="-3", cost="nan", duration_ns=-5),
            run_row(cost="inf", steps="1e400"),
            llm_row("m", "-10", "abc"),
            {"SpanAttributes": None},
            {"SpanAttributes": {**run_attributes, sc.RUN_ID: ""}},  # the agent_runs MV skips these too
            {"SpanAttributes": {**run_attributes, sc.GEN_AI_AGENT_NAME: 10**5000, sc.RUN_STEPS: 10**5000}},
            {"SpanAttributes": ["not", "a", "mapping"]},
            {"SpanAttributes": {sc.RUN_ID: "r", sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT, sc.STOP_REASON: "error"}},
            {},
        ]
    )
    stable = {"agent": "support", "track": "stable"}
    assert value(metrics, m.RUNS_TOTAL, **stable, stop_reason="completed") == 2
    assert value(metrics, m.RUNS_TOTAL, agent="unknown", track="other", stop_reason="error") == 1
    assert value(metrics, m.RUNS_TOTAL, agent="unknown", track="canary", stop_reason="completed") == 1  # huge int
    assert value(metrics, m.RUNS_TOTAL, agent="support", track="canary", stop_reason="completed") == 0  # empty id
    assert value(metrics, m.COST_USD_TOTAL, **stable) == 0
    assert value(metrics, m.RUN_STEPS + "_count", **stable) == 0
    assert value(metrics, m.RUN_DURATION_SECONDS + "_count", **stable) == 1  # the valid one
    assert not [s for s in all_samples(metrics) if s[0] == m.LLM_TOKENS_TOTAL]
    assert all(math.isfinite(v) and v >= 0 for _, _, v in all_samples(metrics))


# --- registry, self-metrics, exposition -------------------------------------------------


def test_own_registry_never_the_global_one(scenario_rows: list[Row]) -> None:
    def global_families() -> set[str]:
        # names only: the default process collectors' values move on their own
        return {metric.name for metric in REGISTRY.collect()}

    before = global_families()
    first, second = CollectorMetrics(), CollectorMetrics()  # a shared registry would raise on duplicates
    first.observe_rows(scenario_rows)
    assert first.registry is not second.registry
    assert REGISTRY not in (first.registry, second.registry)
    assert value(first, m.RUNS_TOTAL, agent="support", track="stable", stop_reason="completed") == 2
    assert value(second, m.RUNS_TOTAL, agent="support", track="stable", stop_reason="completed") == 0
    assert global_families() == before
    assert not any(name.startswith("agentwatch") for name in before)
    assert b"agentwatch_" not in generate_latest(REGISTRY)


def test_self_metrics() -> None:
    metrics = CollectorMetrics()
    metrics.record_received("http", 100)
    metrics.record_received("grpc", 5)
    metrics.record_received("http", 1)
    metrics.record_rejected("invalid", 3)
    metrics.record_rejected("limit", 2)
    metrics.record_dropped("spool_full", 7)
    metrics.record_request("http", 200, body_bytes=5000)
    metrics.record_request("http", 200)
    metrics.record_request("grpc", "RESOURCE_EXHAUSTED")
    metrics.record_written(90, 0.02)
    metrics.set_queue(12)
    metrics.set_spool(4096, 30, 1 << 30)
    assert value(metrics, m.COLLECTOR_SPANS_RECEIVED_TOTAL, transport="http") == 101
    assert value(metrics, m.COLLECTOR_SPANS_RECEIVED_TOTAL, transport="grpc") == 5
    assert value(metrics, m.COLLECTOR_SPANS_REJECTED_TOTAL, reason="invalid") == 3
    assert value(metrics, m.COLLECTOR_SPANS_DROPPED_TOTAL, reason="spool_full") == 7
    assert value(metrics, m.COLLECTOR_REQUESTS_TOTAL, transport="http", code="200") == 2
    assert value(metrics, m.COLLECTOR_REQUESTS_TOTAL, transport="grpc", code="RESOURCE_EXHAUSTED") == 1
    assert value(metrics, m.COLLECTOR_REQUEST_BODY_BYTES + "_count", transport="http") == 1
    assert value(metrics, m.COLLECTOR_REQUEST_BODY_BYTES + "_bucket", transport="http", le="16384.0") == 1
    assert value(metrics, m.COLLECTOR_SPANS_WRITTEN_TOTAL) == 90
    assert value(metrics, m.COLLECTOR_INSERT_DURATION_SECONDS + "_bucket", le="0.025") == 1
    assert value(metrics, m.COLLECTOR_INSERT_DURATION_SECONDS + "_bucket", le="0.01") == 0
    assert value(metrics, m.COLLECTOR_STORE_UP) == 1
    metrics.record_insert_failure()
    assert value(metrics, m.COLLECTOR_INSERT_FAILURES_TOTAL) == 1
    assert value(metrics, m.COLLECTOR_STORE_UP) == 0
    metrics.set_store_up(True)
    assert value(metrics, m.COLLECTOR_STORE_UP) == 1
    assert value(metrics, m.COLLECTOR_QUEUE_SPANS) == 12
    assert value(metrics, m.COLLECTOR_SPOOL_BYTES) == 4096
    assert value(metrics, m.COLLECTOR_SPOOL_SPANS) == 30
    assert value(metrics, m.COLLECTOR_SPOOL_CAPACITY_BYTES) == 1 << 30


def test_self_metric_labels_are_capped_too() -> None:
    metrics = CollectorMetrics()
    for i in range(200):
        metrics.record_rejected(f"reason-{i}", 1)
        metrics.record_request(f"transport-{i}", i)
    assert len(label_values(metrics, m.COLLECTOR_SPANS_REJECTED_TOTAL, "reason")) <= 33
    assert len(label_values(metrics, m.COLLECTOR_REQUESTS_TOTAL, "transport")) <= 9
    assert sum(v for n, _, v in all_samples(metrics) if n == m.COLLECTOR_SPANS_REJECTED_TOTAL) == 200


def test_drift_gauges() -> None:
    metrics = CollectorMetrics()
    metrics.set_drift("support", "stop_reason", 42.5, "fail")
    metrics.set_drift("support", "cost_usd", 0.8, "inconclusive")
    metrics.set_drift("support", "steps", 0.1, "pass")
    metrics.set_drift("support", "steps", 0.3, "fail")  # the latest result wins
    assert value(metrics, m.CANARY_DRIFT_EVALUE, agent="support", metric="stop_reason") == 42.5
    assert value(metrics, m.CANARY_VERDICT, agent="support", metric="stop_reason") == m.VERDICT_FAIL == 2
    assert value(metrics, m.CANARY_VERDICT, agent="support", metric="cost_usd") == m.VERDICT_INCONCLUSIVE == 1
    assert value(metrics, m.CANARY_VERDICT, agent="support", metric="steps") == 2
    assert value(metrics, m.CANARY_DRIFT_EVALUE, agent="support", metric="steps") == 0.3
    assert m.VERDICT_CODES["pass"] == m.VERDICT_PASS == 0
    with pytest.raises(ValueError, match="unknown verdict"):
        metrics.set_drift("support", "steps", 1.0, "maybe")


def _touch_everything(metrics: CollectorMetrics, rows: list[Row]) -> None:
    metrics.observe_rows(rows)
    metrics.observe_rows([run_row(track="canary", stop_reason="weird", agentwatch__budget__exhausted="usd")])
    metrics.set_drift("support", "stop_reason", 3.0, "inconclusive")
    metrics.record_received("http", 10)
    metrics.record_rejected("invalid", 1)
    metrics.record_dropped("shutdown", 1)
    metrics.record_request("http", 200, body_bytes=1000)
    metrics.record_written(9, 0.01)
    metrics.record_insert_failure()
    metrics.set_queue(0)
    metrics.set_spool(0, 0, 1 << 20)
    metrics.set_store_up(True)


def test_promtool_accepts_the_exposition(scenario_rows: list[Row]) -> None:
    metrics = CollectorMetrics()
    _touch_everything(metrics, scenario_rows)
    weird = ['quo"te', "back\\slash", "new\nline", "tab\there", "ünïcødé ✓", "\ud800lone", "x" * 300, "{}=,"]
    metrics.observe_rows([tool_row(name) for name in weird] + [llm_row(name, "1", "1") for name in weird])
    text = metrics.exposition()
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""


# --- concurrency and volume ---------------------------------------------------------------


def test_concurrent_batches_are_exact_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    # switch threads as often as possible, so an unguarded check-then-add in the caps would overshoot

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            _concurrent_round()
    finally:
        sys.setswitchinterval(previous)


def _concurrent_round() -> None:
    cap, threads, batches = 10, 8, 25
    metrics = CollectorMetrics(max_tools_per_agent=cap, max_agents=cap)
    barrier = threading.Barrier(threads)

    def work(worker: int) -> None:
        barrier.wait()
        for batch in range(batches):
            names = [f"t{worker}-{batch}-{i}" for i in range(4)]
            metrics.observe_rows(
                [run_row(), run_row(f"agent-{worker}-{batch}"), llm_row("m", "3", "1")] + [tool_row(n) for n in names]
            )

    pool = [threading.Thread(target=work, args=(worker,)) for worker in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert value(metrics, m.RUNS_TOTAL, agent="support", track="stable", stop_reason="completed") == threads * batches
    assert value(metrics, m.LLM_TOKENS_TOTAL, agent="support", track="canary", model="m", direction="input") == 600
    tools = label_values(metrics, m.TOOL_CALLS_TOTAL, "tool")
    assert len(tools - {"other"}) == cap
    assert len(label_values(metrics, m.RUNS_TOTAL, "agent") - {"other"}) == cap
    assert sum(v for n, _, v in all_samples(metrics) if n == m.TOOL_CALLS_TOTAL) == threads * batches * 4


def synthetic_rows(count: int, run_every: int = 30) -> list[Row]:
    """A busy fleet: ~1 span in ``run_every`` is a run span, the rest are steps, LLM calls and tools."""
    rows: list[Row] = []
    for i in range(count):
        kind = i % run_every
        if kind == 0:
            rows.append(run_row(f"agent-{i % 7}", steps="5", tool_calls="9"))
        elif kind % 3 == 0:
            rows.append(llm_row("gpt-4o", "1000", "50", agent=f"agent-{i % 7}"))
        elif kind % 3 == 1:
            rows.append(tool_row(f"tool.{i % 13}", agent=f"agent-{i % 7}"))
        else:
            rows.append(row({sc.RUN_ID: "r", sc.GEN_AI_AGENT_NAME: "a", sc.GEN_AI_OPERATION_NAME: sc.OP_STEP}))
    return rows


def test_hundred_thousand_spans_count_every_run() -> None:
    # the speed of this path is measured in benchmarks/collector_throughput.py, not asserted here
    rows = synthetic_rows(100_000)
    metrics = CollectorMetrics()
    metrics.observe_rows(rows)
    runs = sum(v for n, _, v in all_samples(metrics) if n == m.RUNS_TOTAL)
    assert runs == len(range(0, 100_000, 30))


# --- property: arbitrary attributes never raise and never exceed the caps -------------------

CAPS: dict[str, Any] = {
    "max_tools_per_agent": 3,
    "max_models_per_agent": 2,
    "max_agents": 4,
    "max_versions_per_agent": 2,
}
_names = st.one_of(st.sampled_from(["a", "b", "c", "d", "e", "f", "", "other", "unknown"]), st.text(max_size=200))
_values = st.one_of(
    _names,
    st.sampled_from(
        [*sc.STOP_REASONS, "stable", "canary", "allowed", "denied", "ok", "blocked", "steps", "usd", "1", "0.5"]
    ),
    st.sampled_from(["-1", "nan", "inf", "1e999", "3", "12.5"]),
    st.integers(),
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
)
_keys = st.sampled_from(
    [
        sc.GEN_AI_AGENT_NAME,
        sc.GEN_AI_AGENT_VERSION,
        sc.TRACK,
        sc.STOP_REASON,
        sc.RUN_STEPS,
        sc.RUN_TOOL_CALLS,
        sc.RUN_COST_USD,
        sc.BUDGET_EXHAUSTED,
        sc.GEN_AI_TOOL_NAME,
        sc.TOOL_DISPOSITION,
        sc.TOOL_OUTCOME,
        sc.GEN_AI_REQUEST_MODEL,
        sc.GEN_AI_RESPONSE_MODEL,
        sc.GEN_AI_USAGE_INPUT_TOKENS,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    ]
)
_operations = st.sampled_from([sc.OP_INVOKE_AGENT, sc.OP_EXECUTE_TOOL, sc.OP_CHAT, sc.OP_STEP, "embeddings"])
_attributes = st.builds(
    lambda fixed, extra: {**extra, **fixed},
    st.fixed_dictionaries({}, optional={sc.RUN_ID: _values, sc.GEN_AI_OPERATION_NAME: st.one_of(_operations, _values)}),
    st.dictionaries(st.one_of(_keys, st.text(max_size=10)), _values, max_size=10),
)
_rows = st.one_of(
    st.builds(lambda a, d: {"SpanAttributes": a, "Duration": d}, _attributes, st.one_of(st.integers(), _values)),
    st.builds(lambda a: {"SpanAttributes": a}, _values),
    st.none(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_rows, max_size=60))
def test_arbitrary_attributes_never_raise_nor_exceed_caps(rows: list[Any]) -> None:
    metrics = CollectorMetrics(**CAPS)
    metrics.observe_rows(rows)
    metrics.exposition()  # encodes: every label value is valid UTF-8
    closed = {
        "track": {*(t.value for t in sc.Track), "other"},
        "stop_reason": {*sc.STOP_REASONS, "other"},
        "disposition": {*(d.value for d in sc.ToolDisposition), "other"},
        "outcome": {*(o.value for o in sc.ToolOutcome), "other"},
        "budget": {*(b.value for b in sc.BudgetName), "other"},
        "direction": {"input", "output"},
    }
    per_agent: dict[tuple[str, str], set[str]] = defaultdict(set)
    agents: set[str] = set()
    for name, labels, sample in all_samples(metrics):
        assert math.isfinite(sample), (name, labels, sample)
        assert sample >= 0, (name, labels, sample)
        for key, label in labels.items():
            if key == "le":
                continue
            assert 0 < len(label) <= m.MAX_LABEL_LENGTH, (key, label)
            assert label.isprintable(), (key, label)
            assert label in closed.get(key, {label}), (key, label)
            if key in {"tool", "model", "version"}:
                per_agent[(labels["agent"], key)].add(label)
        if "agent" in labels:
            agents.add(labels["agent"])
    assert len(agents - {"other", "unknown"}) <= CAPS["max_agents"]
    caps = {"tool": CAPS["max_tools_per_agent"], "model": CAPS["max_models_per_agent"]}
    caps["version"] = CAPS["max_versions_per_agent"]
    for (_, key), seen in per_agent.items():
        assert len(seen - {"other", "unknown"}) <= caps[key], (key, seen)


@pytest.mark.parametrize("operation_key", [sc.GEN_AI_OPERATION_NAME, sc.OPERATION_NAME])
def test_steps_of_every_version_are_never_llm_calls(operation_key: str) -> None:
    """A step (old form: gen_ai.operation.name, new: agentwatch.operation.name) carries the run's
    attributes and may carry usage-like numbers, but no model: it never counts as an LLM call."""
    metrics = CollectorMetrics()
    step = {
        sc.RUN_ID: "r", sc.GEN_AI_AGENT_NAME: "a", sc.TRACK: "stable", sc.STEP_INDEX: "1",
        operation_key: sc.OP_STEP, sc.GEN_AI_USAGE_INPUT_TOKENS: "40", sc.GEN_AI_USAGE_OUTPUT_TOKENS: "4",
    }  # fmt: skip
    metrics.observe_rows([row(step)])
    assert [s for s in all_samples(metrics) if s[0].startswith(tuple(m.AGENT_METRICS))] == []
