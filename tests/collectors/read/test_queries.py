"""The read queries against a real embedded ClickHouse filled with the example agent's real spans."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from _chrows import json_rows, new_span_id, new_token, now_ns, run_attributes, span_row
from _readdata import fleet

from agentwatch.collectors.read.filters import MAX_LIMIT, InvalidQuery, RunFilter, parse_since
from agentwatch.collectors.read.models import RunSummary, TraceView
from agentwatch.collectors.read.render import render_runs, render_trace
from agentwatch.collectors.read.runs import get_run, list_runs
from agentwatch.collectors.read.stats import stats
from agentwatch.collectors.read.traces import build_tree, get_trace, span_kind_of
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(clickhouse_store: ClickHouseStore) -> ClickHouseStore:
    fleet().load(clickhouse_store)
    return clickhouse_store


# --- parse_since / RunFilter --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        (" 7d ", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("0m", timedelta(0)),
    ],
)
def test_parse_since_relative(text: str, delta: timedelta) -> None:
    assert parse_since(text, now=NOW) == NOW - delta


def test_parse_since_iso_is_utc() -> None:
    assert parse_since("2026-11-24T06:00:00Z") == datetime(2026, 11, 24, 6, tzinfo=UTC)
    assert parse_since("2026-11-24T06:00:00") == datetime(2026, 11, 24, 6, tzinfo=UTC)  # no zone: UTC
    moscow = parse_since("2026-11-24T09:00:00+03:00")
    assert moscow == datetime(2026, 11, 24, 6, tzinfo=UTC)
    assert moscow.tzinfo is UTC
    assert parse_since("2026-11-24") == datetime(2026, 11, 24, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "  ", "yesterday", "15", "5x", "-3h", "1.5h", "2026-13-01", "h2"])
def test_parse_since_rejects_with_a_clear_message(text: str) -> None:
    with pytest.raises(InvalidQuery, match=r"15m, 2h, 7d"):
        parse_since(text)


def test_parse_since_overflow_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidQuery, match="too large"):
        parse_since("99999999999d")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stop_reason": "exploded"}, "unknown stop reason 'exploded'"),
        ({"limit": 0}, f"from 1 to {MAX_LIMIT}"),
        ({"limit": MAX_LIMIT + 1}, f"from 1 to {MAX_LIMIT}"),
        ({"limit": True}, "limit must be an integer"),
        ({"agent": ""}, "agent must be"),
        ({"agent": "a" * 257}, "agent must be"),
        ({"tenant": "acme\n"}, "tenant must be"),
        ({"since": datetime(2026, 1, 1)}, "since must be timezone-aware"),
        ({"since": NOW, "until": NOW - timedelta(hours=1)}, "since is later than until"),
    ],
)
def test_run_filter_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidQuery, match=re.escape(message)):
        RunFilter(**kwargs)


# --- list_runs ----------------------------------------------------------------------------------


def test_list_runs_returns_every_run_newest_first(store: ClickHouseStore) -> None:
    runs = list_runs(store, RunFilter())
    assert {run.run_id for run in runs} == {info.run_id for info in fleet().runs}
    assert len(runs) == 10
    starts = [run.start_time for run in runs]
    assert starts == sorted(starts, reverse=True)
    assert all(run.start_time.tzinfo is UTC for run in runs)


def test_run_summary_fields_match_the_instrumentation(store: ClickHouseStore) -> None:
    info = fleet().run(tenant="acme", stop_reason="max_tool_calls")
    [run] = [r for r in list_runs(store, RunFilter()) if r.run_id == info.run_id]
    assert (run.tenant, run.agent, run.version, run.track, run.runtime) == ("acme", "support", "v1", "stable", "custom")
    assert run.stop_reason == "max_tool_calls"
    assert run.budget_exhausted == "tool_calls"
    assert (run.steps, run.tool_calls) == (info.steps, info.tool_calls)
    assert run.llm_calls == run.steps
    assert run.input_tokens > run.output_tokens > 0
    assert run.cost_usd > 0
    assert run.trace_id == info.trace_id
    assert 0 < run.duration_s < 60
    assert run.end_time >= run.start_time
    assert run.input is None  # content only for a single run


def test_filters_compose(store: ClickHouseStore) -> None:
    def ids(**kwargs: Any) -> set[str]:
        return {run.run_id for run in list_runs(store, RunFilter(**kwargs))}

    everything = fleet().runs
    assert ids(tenant="acme") == {r.run_id for r in everything if r.tenant == "acme"}
    assert ids(track="canary") == {r.run_id for r in everything if r.track == "canary"}
    assert ids(stop_reason="completed", track="stable") == {
        r.run_id for r in everything if r.stop_reason == "completed" and r.track == "stable"
    }
    assert len(ids(stop_reason="completed", track="stable")) == 2
    assert ids(agent="support") == {r.run_id for r in everything}
    assert ids(agent="billing") == set()
    assert ids(stop_reason="kill_switch") == set()
    assert ids(tenant="globex", stop_reason="policy_denied") == {
        fleet().run(tenant="globex", stop_reason="policy_denied", track=t).run_id for t in ("stable", "canary")
    }


def test_time_window_and_limit(store: ClickHouseStore) -> None:
    runs = list_runs(store, RunFilter())
    assert len(list_runs(store, RunFilter(since=parse_since("1h")))) == 10
    assert list_runs(store, RunFilter(since=datetime.now(UTC) + timedelta(minutes=5))) == []
    assert list_runs(store, RunFilter(until=parse_since("1h"))) == []
    # start times are floored to the microsecond (Python datetimes); the window is inclusive at both ends
    newest, oldest = runs[0], runs[-1]
    micro = timedelta(microseconds=1)
    assert len(list_runs(store, RunFilter(since=oldest.start_time, until=newest.start_time + micro))) == 10
    assert len(list_runs(store, RunFilter(since=oldest.start_time + micro, until=newest.start_time + micro))) == 9
    assert list_runs(store, RunFilter(since=newest.start_time))[0].run_id == newest.run_id
    top3 = list_runs(store, RunFilter(limit=3))
    assert [run.run_id for run in top3] == [run.run_id for run in runs[:3]]


def test_user_input_is_never_sql(store: ClickHouseStore) -> None:
    for hostile in ("support' OR '1'='1", "x'); DROP TABLE agent_runs; --", "{agent:String}", "\\'"):
        assert list_runs(store, RunFilter(agent=hostile)) == []
        assert list_runs(store, RunFilter(tenant=hostile)) == []
        assert get_run(store, hostile) is None
        assert get_trace(store, hostile) is None
    assert len(list_runs(store, RunFilter())) == 10


def test_a_run_reexported_is_listed_once(store: ClickHouseStore) -> None:
    """agent_runs is a ReplacingMergeTree: before a merge a re-sent run span is two rows; readers see one."""
    info = fleet().run(tenant="acme", stop_reason="completed")
    run_row = next(
        row
        for row in fleet().rows
        if isinstance(row["SpanAttributes"], dict) and row["SpanAttributes"].get(semconv.RUN_ID) == info.run_id
        if row["SpanAttributes"].get(semconv.GEN_AI_OPERATION_NAME) == semconv.OP_INVOKE_AGENT
    )
    store.insert_json_rows("otel_traces", json_rows([run_row]), dedup_token=new_token())
    raw = store.query("SELECT count() AS n FROM agent_runs WHERE RunId = {id:String}", {"id": info.run_id})
    assert int(str(raw[0]["n"])) == 2
    listed = [run.run_id for run in list_runs(store, RunFilter())]
    assert listed.count(info.run_id) == 1
    assert len(listed) == 10


# --- get_run ------------------------------------------------------------------------------------


def test_get_run_and_tenant_confinement(store: ClickHouseStore) -> None:
    info = fleet().run(tenant="globex", stop_reason="policy_denied")
    run = get_run(store, info.run_id)
    assert run is not None
    assert (run.run_id, run.tenant, run.stop_reason) == (info.run_id, "globex", "policy_denied")
    assert run.input == ""  # content capture is off in the example: stored empty, never the ticket text
    assert get_run(store, info.run_id, tenant="globex") == run
    assert get_run(store, info.run_id, tenant="acme") is None
    assert get_run(store, "no-such-run") is None


# --- get_trace ----------------------------------------------------------------------------------


def test_trace_tree_shape(store: ClickHouseStore) -> None:
    info = fleet().run(tenant="acme", stop_reason="max_tool_calls")
    view = get_trace(store, info.run_id)
    assert view is not None
    assert view.trace_id == info.trace_id
    assert view.span_count == info.spans
    assert not view.truncated
    [root] = view.roots
    assert root.kind == "run"
    assert root.name == "invoke_agent support"
    assert root.parent_span_id == ""
    assert root.start_offset_ms == 0
    assert [child.kind for child in root.children] == ["step"] * info.steps
    indexes = [int(step.attributes[semconv.STEP_INDEX]) for step in root.children]
    assert indexes == sorted(indexes)
    for step in root.children:
        assert step.children[0].kind == "llm"
        assert {child.kind for child in step.children} <= {"llm", "tool"}
        for child in step.children:
            assert child.start_offset_ms >= step.start_offset_ms
            assert child.start_offset_ms + child.duration_ms <= step.start_offset_ms + step.duration_ms + 0.001
    tools = [node for node in view.nodes() if node.kind == "tool"]
    assert len(tools) == info.tool_calls
    assert all(tool.attributes[semconv.TOOL_DISPOSITION] == "allowed" for tool in tools)
    assert root.attributes[semconv.STOP_REASON] == "max_tool_calls"
    assert root.attributes[semconv.BUDGET_EXHAUSTED] == "tool_calls"
    assert root.attributes[semconv.BUDGET_MAX_TOOL_CALLS]
    assert [event.name for event in root.events] == [semconv.EVENT_BUDGET_EXHAUSTED]
    assert root.events[0].attributes[semconv.EVENT_ATTR_BUDGET] == "tool_calls"
    llm = next(node for node in view.nodes() if node.kind == "llm")
    assert llm.attributes[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert int(llm.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS]) > 0
    assert float(llm.attributes[semconv.COST_USD]) > 0
    assert abs(view.duration_ms - root.duration_ms) < 0.01


def test_trace_of_a_denied_tool_call(store: ClickHouseStore) -> None:
    view = get_trace(store, fleet().run(tenant="globex", stop_reason="policy_denied").run_id)
    assert view is not None
    [tool] = [node for node in view.nodes() if node.kind == "tool"]
    assert tool.attributes[semconv.TOOL_DISPOSITION] == "denied"
    assert tool.attributes[semconv.TOOL_OUTCOME] == "blocked"
    assert tool.attributes[semconv.POLICY_RULE]
    assert semconv.EVENT_POLICY_DENIED in [event.name for event in tool.events]
    assert semconv.GEN_AI_TOOL_CALL_ARGUMENTS not in tool.attributes  # only the key attributes travel


def test_trace_is_confined_to_the_tenant(store: ClickHouseStore) -> None:
    info = fleet().run(tenant="initech", stop_reason="approval_rejected")
    assert get_trace(store, info.run_id, tenant="initech") is not None
    assert get_trace(store, info.run_id, tenant="acme") is None
    assert get_trace(store, "unknown") is None


def test_trace_includes_foreign_spans_and_orphans(clickhouse_store: ClickHouseStore) -> None:
    """A plain OTel parent span (kind other) becomes the root; a span whose parent is missing is a root too."""
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    start = now_ns()
    http_id, run_id_span = new_span_id(), new_span_id()
    attributes = run_attributes("run-x", extra={semconv.RUN_STEPS: "0"})
    rows = [
        span_row("POST /chat", trace_id=trace_id, span_id=http_id, start_ns=start, duration_ns=9_000_000),
        span_row(
            "invoke_agent support",
            trace_id=trace_id,
            span_id=run_id_span,
            parent_span_id=http_id,
            start_ns=start + 1_000_000,
            duration_ns=5_000_000,
            attributes=attributes,
        ),
        span_row("lost child", trace_id=trace_id, parent_span_id="ffffffffffffffff", start_ns=start + 2_000_000),
        span_row("other trace", start_ns=start),
    ]
    clickhouse_store.insert_json_rows("otel_traces", json_rows(rows), dedup_token=new_token())
    view = get_trace(clickhouse_store, "run-x")
    assert view is not None
    assert view.span_count == 3
    assert [root.name for root in view.roots] == ["POST /chat", "lost child"]
    assert view.roots[0].kind == "other"
    assert [(child.name, child.kind, child.start_offset_ms) for child in view.roots[0].children] == [
        ("invoke_agent support", "run", 1.0)
    ]
    assert view.roots[1].start_offset_ms == 2.0
    assert view.duration_ms == 9.0


def test_build_tree_survives_cycles_and_self_parents() -> None:
    from agentwatch.collectors.read.models import TraceNode

    def node(span_id: str, parent: str, start: float) -> TraceNode:
        return TraceNode(span_id, parent, span_id, "other", "Internal", "svc", start, 1.0, "Unset", "", {})

    a, b, c = node("a", "a", 0.0), node("b", "a", 2.0), node("c", "a", 1.0)
    x, y = node("x", "y", 5.0), node("y", "x", 6.0)
    roots = build_tree([a, b, c, x, y])
    assert [root.span_id for root in roots] == ["a", "x"]
    assert [child.span_id for child in a.children] == ["c", "b"]
    assert [child.span_id for child in x.children] == ["y"]
    assert y.children == []


@pytest.mark.parametrize(
    ("operation", "extra", "kind"),
    [
        (semconv.OP_INVOKE_AGENT, {}, "run"),
        (semconv.OP_STEP, {}, "step"),
        (semconv.OP_CHAT, {}, "llm"),
        ("text_completion", {}, "llm"),
        (semconv.OP_EXECUTE_TOOL, {}, "tool"),
        (semconv.OP_HANDOFF, {}, "other"),
        ("", {semconv.OPERATION_NAME: semconv.OP_STEP}, "step"),  # a step of this version
        ("", {semconv.OPERATION_NAME: semconv.OP_HANDOFF}, "other"),
        ("", {semconv.GEN_AI_REQUEST_MODEL: "gpt-4o"}, "llm"),
        ("", {}, "other"),
    ],
)
def test_span_kind_from_the_operation(operation: str, extra: dict[str, str], kind: str) -> None:
    attributes = {semconv.GEN_AI_OPERATION_NAME: operation, **extra} if operation else extra
    assert span_kind_of(attributes) == kind


@pytest.mark.parametrize("operation", [semconv.OP_STEP, semconv.OP_HANDOFF, semconv.OP_GUARDRAIL])
def test_spans_of_earlier_agentwatch_versions_read_like_current_ones(operation: str) -> None:
    """Before agentwatch.operation.name, steps, handoffs and guardrails named their operation in
    gen_ai.operation.name: such a span reads back (kind, kept attributes, rendering) exactly like a new one."""
    from agentwatch.collectors.read.traces import _node_from_row

    base = {semconv.RUN_ID: "r1", semconv.STEP_INDEX: "2", semconv.GEN_AI_AGENT_NAME: "support"}

    def node(attributes: dict[str, str]) -> Any:
        row = {
            "SpanId": "s1", "ParentSpanId": "", "SpanName": "step support", "SpanKind": "Internal",
            "ServiceName": "svc", "StartNs": 1_000, "Duration": 5_000_000, "StatusCode": "Unset",
            "StatusMessage": "", "SpanAttributes": attributes, "EventNs": [], "EventNames": [],
            "EventAttributes": [],
        }  # fmt: skip
        return _node_from_row(row, 0)

    old = node({**base, semconv.GEN_AI_OPERATION_NAME: operation})
    new = node({**base, semconv.OPERATION_NAME: operation})
    assert old == new
    assert old.kind == ("step" if operation == semconv.OP_STEP else "other")
    assert old.attributes.get(semconv.OPERATION_NAME) == operation
    assert semconv.GEN_AI_OPERATION_NAME not in old.attributes

    def rendered(root: Any) -> str:
        view = TraceView("0" * 31 + "1", None, datetime(2026, 1, 1, tzinfo=UTC), 5.0, 1, False, [root])
        return render_trace(view)

    assert rendered(old) == rendered(new)
    assert operation in rendered(new) or operation == semconv.OP_STEP  # handoffs and guardrails show op=


# --- rendering and JSON -------------------------------------------------------------------------


def test_render_trace_shows_durations_dispositions_and_cost(store: ClickHouseStore) -> None:
    denied = get_trace(store, fleet().run(tenant="globex", stop_reason="policy_denied").run_id)
    looped = get_trace(store, fleet().run(tenant="acme", stop_reason="max_tool_calls").run_id)
    assert denied is not None
    assert looped is not None
    text = render_trace(denied)
    lines = text.splitlines()
    assert "stop=policy_denied" in lines[0]
    assert "tenant=globex" in lines[0]
    assert re.search(r"\d+ spans", lines[1])
    assert any(line.lstrip().startswith(("0.00ms", "0.0")) and "invoke_agent support" in line for line in lines)
    tool_line = next(line for line in lines if "execute_tool db.drop_table" in line)
    assert "denied/blocked" in tool_line
    assert "rule=" in tool_line
    assert "!policy.denied" in tool_line
    assert re.match(r"^\s+\d+\.\d+ms\s+\d+\.\d+ms  \s*[└├]─ ", tool_line)
    llm_line = next(line for line in lines if "chat gpt-4o-mini" in line)
    assert re.search(r"tokens=\d+/\d+", llm_line)
    assert re.search(r"cost=\$0\.\d{4}", llm_line)
    looped_text = render_trace(looped)
    assert "budget=tool_calls" in looped_text.splitlines()[0]
    assert "!budget.exhausted" in looped_text
    assert looped.run is not None
    assert looped_text.count("step support") == looped.run.steps
    # the tree is indented: grandchildren sit deeper than children
    assert "│  ├─ chat" in looped_text or "   ├─ chat" in looped_text


def test_render_runs_is_an_aligned_table(store: ClickHouseStore) -> None:
    runs = list_runs(store, RunFilter())
    lines = render_runs(runs).splitlines()
    assert len(lines) == 11
    header = lines[0]
    assert header.startswith("START (UTC)")
    column = header.index("STOP REASON")
    reasons = {line[column:].split()[0] for line in lines[1:]}
    assert reasons == {"completed", "max_tool_calls", "policy_denied", "approval_rejected"}
    cost_end = header.index("COST") + len("COST")
    assert all(line[cost_end - 1] != " " for line in lines[1:])  # right-aligned numbers end in one column
    assert all("$" in line for line in lines[1:])
    assert render_runs([]) == "no runs match"


def test_json_round_trips(store: ClickHouseStore) -> None:
    info = fleet().run(tenant="acme", stop_reason="completed", track="canary")
    view = get_trace(store, info.run_id)
    assert view is not None
    document = view.to_dict()
    assert document["run"]["start_time"].endswith("Z")
    again = TraceView.from_dict(document)
    assert again.to_dict() == document
    assert render_trace(again) == render_trace(view)
    run = get_run(store, info.run_id)
    assert run is not None
    assert RunSummary.from_dict(run.to_dict()) == run
    assert "input" not in list_runs(store, RunFilter(limit=1))[0].to_dict()


def test_times_survive_any_client_zone() -> None:
    moment = datetime(2026, 11, 24, 6, 0, 0, 123456, tzinfo=timezone(timedelta(hours=5)))
    run = RunSummary.from_dict(
        {
            **dict.fromkeys(("run_id", "tenant", "agent", "version", "track", "runtime", "stop_reason"), "x"),
            **dict.fromkeys(("budget_exhausted", "trace_id", "span_id", "parent_run_id"), ""),
            **dict.fromkeys(("conversation_id", "service_name", "status_code"), ""),
            **dict.fromkeys(("steps", "tool_calls", "llm_calls", "input_tokens", "output_tokens"), 0),
            "unpriced_llm_calls": 0,
            "duration_s": 0.5,
            "cost_usd": 0.0,
            "start_time": moment.isoformat(),
            "end_time": moment.isoformat(),
        }
    )
    assert run.to_dict()["start_time"] == "2026-11-24T01:00:00.123456Z"


# --- stats --------------------------------------------------------------------------------------


def test_stats_answers_the_fleet_questions(store: ClickHouseStore) -> None:
    result = stats(store, RunFilter(since=parse_since("1h")))
    by_reason = {(row["track"], row["stop_reason"]): row["runs"] for row in result.stop_reasons}
    assert by_reason == {
        (track, reason): count
        for track in ("stable", "canary")
        for reason, count in (("completed", 2), ("max_tool_calls", 1), ("policy_denied", 1), ("approval_rejected", 1))
    }
    assert {(row["track"], row["budget"], row["runs"]) for row in result.budgets} == {
        ("stable", "tool_calls", 1),
        ("canary", "tool_calls", 1),
    }
    denials = {(row["track"], row["disposition"], row["tool"]) for row in result.denials}
    assert denials == {
        (track, disposition, tool)
        for track in ("stable", "canary")
        for disposition, tool in (("denied", "db.drop_table"), ("rejected", "email.send"))
    }
    assert all(row["rule"] for row in result.denials)
    costs = {row["track"]: row for row in result.cost}
    assert costs["stable"]["runs"] == 5
    assert costs["stable"]["total_usd"] == pytest.approx(
        sum(run.cost_usd for run in list_runs(store, RunFilter(track="stable")))
    )
    assert costs["stable"]["max_usd"] >= costs["stable"]["p95_usd"] >= costs["stable"]["p50_usd"] > 0
    assert result.top_tools[0]["tool"] == "kb.search"
    assert result.top_tools[0]["calls"] == 2 * fleet().run(tenant="acme", stop_reason="max_tool_calls").tool_calls
    denied_tools = {row["tool"]: row["denied"] for row in result.top_tools if row["denied"]}
    assert denied_tools == {"db.drop_table": 2, "email.send": 2}
    document = result.to_dict()
    assert document["since"].endswith("Z")
    assert document["until"] is None


def test_stats_for_one_tenant_and_an_empty_window(store: ClickHouseStore) -> None:
    acme = stats(store, RunFilter(tenant="acme"))
    assert sum(row["runs"] for row in acme.stop_reasons) == 6
    assert {row["tool"] for row in acme.denials} == set()  # the denials happened to globex and initech
    assert "db.drop_table" not in {row["tool"] for row in acme.top_tools}
    empty = stats(store, RunFilter(until=parse_since("1h")))
    assert (empty.stop_reasons, empty.budgets, empty.denials, empty.cost, empty.top_tools) == ([], [], [], [], [])
