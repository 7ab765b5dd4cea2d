"""Replay: recorded runs re-run on a runtime with a replay gateway, scored for parity with the recording.

Recordings are real example runs stored in chDB through the collector's decoder; the targets are the
real custom loop, the real OpenAI Agents SDK and LangGraph with the examples' scripted models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from _replaydata import ORDER_TICKET, RecordedFleet, recorded_scenarios, recorded_tool_error
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.collectors._examples import load_example
from agentwatch.collectors.replay.parity import (
    ParityReport,
    ParityThresholds,
    canonical_arguments,
    edit_distance,
    sequence_similarity,
)
from agentwatch.collectors.replay.recordings import RecordedRun, RecordedToolCall, RecordingFilter, load_recordings
from agentwatch.collectors.replay.runner import (
    ReplayRecording,
    ReplayRequest,
    TargetError,
    load_target,
    replay,
    replay_settings,
    served_value,
)
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.instrumentation import AgentRun, KillSwitchEngaged, Policy, ToolDenied, ToolGateway, semconv

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

custom = load_example("custom_agent")
CUSTOM = "agentwatch_examples.custom_agent:replay_target"
AGENTS_SDK = "agentwatch_examples.openai_agents_support:replay_target"
LANGGRAPH = "agentwatch_examples.langgraph_support:replay_target"
FIVE_REASONS = {"completed", "max_tool_calls", "policy_denied", "approval_rejected"}


def stored(store: ClickHouseStore, *fleets: RecordedFleet, **filters: Any) -> list[RecordedRun]:
    for fleet in fleets:
        fleet.load(store)
    return load_recordings(store, RecordingFilter(**filters))


def replay_on(target_spec: str, recordings: list[RecordedRun]) -> ParityReport:
    return replay(recordings, load_target(target_spec), target_name=target_spec)


def assert_perfect(report: ParityReport, runs: int) -> None:
    assert report.verdict == "pass", report.to_dict()
    assert [run.status for run in report.runs] == ["match"] * runs, [run.divergences for run in report.runs]
    assert report.agreement == 1.0
    assert report.mean_similarity == 1.0
    for run in report.runs:
        assert run.unrecorded == ()
        assert run.never_made == ()
        assert run.recorded_steps == run.replayed_steps
        assert run.recorded_cost_usd == run.replayed_cost_usd


# --- pure scoring -----------------------------------------------------------------------------------------


def test_sequence_similarity_is_one_minus_normalised_edit_distance() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a"]) == 1
    assert sequence_similarity([], []) == 1.0
    assert sequence_similarity(["a", "b"], ["a", "b"]) == 1.0
    assert sequence_similarity(["a", "b", "c", "d"], ["a", "c", "d"]) == 0.75
    assert sequence_similarity(["a"], ["b"]) == 0.0


def test_arguments_compare_in_one_spelling_and_results_come_back_as_values() -> None:
    assert canonical_arguments('{"b": 1, "a": "x"}') == canonical_arguments('{"a":"x","b":1}') == '{"a":"x","b":1}'
    assert canonical_arguments("not json") == "not json"
    assert served_value('{"status": "shipped"}') == {"status": "shipped"}
    assert served_value('["a", "b"]') == ["a", "b"]
    assert served_value("42") == "42"  # a captured string stays a string
    assert served_value("") is None


def test_thresholds_must_be_fractions() -> None:
    with pytest.raises(ValueError, match="min_agreement"):
        ParityThresholds(min_agreement=1.5)


# --- identical runtime ----------------------------------------------------------------------------------


def test_custom_loop_replayed_on_the_custom_loop_is_perfect(clickhouse_store: ClickHouseStore) -> None:
    fleet = recorded_scenarios("custom_agent")
    recordings = stored(clickhouse_store, fleet)
    assert {run.run_id for run in recordings} == set(fleet.run_ids)
    assert {run.stop_reason for run in recordings} == FIVE_REASONS
    assert all(run.skip_reason is None for run in recordings)
    report = replay_on(CUSTOM, recordings)
    assert_perfect(report, 5)
    # answered from the recording; refusals are refused again: by the policy, or as the approver did
    dispositions = {run.recorded_stop_reason: [s.disposition for s in run.replayed_tools] for run in report.runs}
    assert dispositions == {
        "completed": ["replayed"],
        "max_tool_calls": ["replayed"] * 12,
        "policy_denied": ["denied"],
        "approval_rejected": ["rejected"],
    }
    assert all(run.output_matches is not False for run in report.runs)
    assert sum(run.output_matches is True for run in report.runs) == 2  # the two completed tickets
    assert report.to_dict()["summary"]["stop_reasons"]["max_tool_calls -> max_tool_calls"] == 1


# --- across runtimes -------------------------------------------------------------------------------------


def test_custom_loop_replayed_on_the_agents_sdk_and_back(clickhouse_store: ClickHouseStore) -> None:
    custom_runs = stored(clickhouse_store, recorded_scenarios("custom_agent"))
    assert_perfect(replay_on(AGENTS_SDK, custom_runs), 5)

    sdk_fleet = recorded_scenarios("openai_agents_support")
    sdk_runs = stored(clickhouse_store, sdk_fleet, run_ids=tuple(sdk_fleet.run_ids))
    assert {run.runtime for run in sdk_runs} == {"openai-agents"}
    report = replay_on(CUSTOM, sdk_runs)
    assert_perfect(report, 5)
    assert {run.replayed_stop_reason for run in report.runs} == FIVE_REASONS


@pytest.mark.parametrize("source", ["custom_agent", "openai_agents_support", "langgraph_support"])
@pytest.mark.parametrize("target", [CUSTOM, AGENTS_SDK, LANGGRAPH])
def test_every_runtime_replays_onto_every_runtime(source: str, target: str, clickhouse_store: ClickHouseStore) -> None:
    report = replay_on(target, stored(clickhouse_store, recorded_scenarios(source)))
    assert_perfect(report, 5)
    assert {run.replayed_stop_reason for run in report.runs} == FIVE_REASONS


# --- divergent runtimes ---------------------------------------------------------------------------------


class AuditingModel:
    """The scripted model, but it first writes an audit row: a write no recording has."""

    def __init__(self, version: str) -> None:
        self.inner = custom.ScriptedModel(version=version)
        self.audited = False

    @property
    def seen(self) -> list[tuple[str, Any]]:
        seen: list[tuple[str, Any]] = self.inner.seen
        return seen

    def next_turn(self, ticket: str) -> Any:
        if not self.audited:
            self.audited = True
            call = custom.ToolCall("db.write", {"table": "audit", "row": {"ticket": ticket[:16]}}, "call_audit")
            return custom.ModelTurn((call,), None, input_tokens=900, output_tokens=60)
        return self.inner.next_turn(ticket)


class HastyModel:
    """Answers at once without looking anything up: it skips every recorded tool call."""

    def __init__(self, version: str) -> None:
        self.seen: list[tuple[str, Any]] = []

    def next_turn(self, ticket: str) -> Any:
        return custom.ModelTurn(final="Resolved: see our help center", input_tokens=1050, output_tokens=70)


class ModelSwapTarget:
    """The custom loop with another model; ``writes`` counts real executions of the write tool."""

    runtime = "custom"

    def __init__(self, model: Callable[[str], Any]) -> None:
        self.model = model
        self.base = custom.replay_target()
        self.writes = 0
        self.tools: Mapping[str, Callable[..., Any]] = {**custom.TOOLS, "db.write": self.db_write}

    @property
    def policy(self) -> Policy:
        policy: Policy = self.base.policy
        return policy

    def db_write(self, table: str, row: Mapping[str, Any]) -> dict[str, str]:
        self.writes += 1
        return {"table": table, "status": "written"}

    def run(self, request: ReplayRequest, gateway: ToolGateway) -> AgentRun:
        run: AgentRun = custom.handle_ticket(
            request.input,
            config=self.base.config,
            tenant_id=request.tenant_id or "",
            track=request.track,
            tracer_provider=request.tracer_provider,
            settings=request.settings,
            gateway=gateway,
            model=self.model(request.version or "v1"),
        )
        return run


def test_a_call_the_recording_lacks_is_refused_never_executed_and_fails_parity(
    clickhouse_store: ClickHouseStore,
) -> None:
    fleet = recorded_scenarios("custom_agent")
    target = ModelSwapTarget(AuditingModel)
    report = replay(stored(clickhouse_store, fleet), target)
    assert target.writes == 0, "replay executed a tool"
    assert report.verdict == "fail"
    assert report.agreement == pytest.approx(1 / 5)  # only the injected ticket was policy_denied anyway
    for run in report.runs:
        assert run.status == "diverged"
        assert run.replayed_stop_reason == "policy_denied"
        assert len(run.unrecorded) == 1
        assert run.unrecorded[0].startswith('db.write{"row":{"ticket":')
        assert any(text.startswith("called db.write") and "not executed" in text for text in run.divergences)
    order_run_id = next(run_id for run_id, ticket, _ in fleet.runs if ticket == ORDER_TICKET)
    order = next(run for run in report.runs if run.run_id == order_run_id)
    assert "stop reason completed -> policy_denied" in order.divergences
    assert order.never_made == ('orders.lookup{"order_id":"1234"}',)
    assert "tool sequence differs from call 1: recorded orders.lookup" in " ".join(order.divergences)


def test_a_runtime_that_skips_tools_is_reported_call_by_call(clickhouse_store: ClickHouseStore) -> None:
    report = replay(stored(clickhouse_store, recorded_scenarios("custom_agent")), ModelSwapTarget(HastyModel))
    assert report.verdict == "fail"
    assert {run.replayed_stop_reason for run in report.runs} == {"completed"}
    looping = next(run for run in report.runs if run.recorded_stop_reason == "max_tool_calls")
    assert len(looping.never_made) == 12
    assert looping.sequence_similarity == 0.0
    assert "stop reason max_tool_calls -> completed" in looping.divergences
    assert "tool sequence differs from call 1" in " ".join(looping.divergences)
    assert "steps 13 -> 1" in looping.divergences


def test_recorded_refusals_are_refused_again_and_no_tool_ever_runs() -> None:
    executed: list[str] = []

    def write(table: str) -> str:
        executed.append(table)
        return "written"

    calls = [
        RecordedToolCall("db.write", '{"table": "a"}', "", "killed", "blocked", "kill_switch", 1),
        RecordedToolCall("db.write", '{"table": "b"}', "", "killed", "blocked", "kill_switch_unavailable", 1),
        RecordedToolCall("db.write", '{"table": "c"}', '{"rows": 1}', "allowed", "ok", "allow:db.write", 1),
        RecordedToolCall("db.write", '{"table": "d"}', "", "allowed", "ok", "allow:db.write", 2),
    ]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = replay_settings(None)
    recording = ReplayRecording(calls, redactor=settings.redactor)
    gateway = ToolGateway(
        policy=Policy(allow=["db.*"]),
        tools={"db.write": write},
        replay=recording,
        settings=settings,
        tracer_provider=provider,
    )
    with pytest.raises(KillSwitchEngaged):
        gateway.call("db.write", {"table": "a"})
    with pytest.raises(ToolDenied, match="refused in the recording"):
        gateway.call("db.write", {"table": "b"})
    assert gateway.call("db.write", {"table": "c"}) == {"rows": 1}
    with pytest.raises(ToolDenied) as again:
        gateway.call("db.write", {"table": "c"})  # a recorded call answers once
    assert again.value.rule == "replay_unrecorded"
    assert executed == []
    assert [call.arguments for call in recording.never_made()] == ['{"table": "d"}']
    spans = [span.attributes or {} for span in exporter.get_finished_spans()]
    assert [(a[semconv.TOOL_DISPOSITION], a[semconv.TOOL_OUTCOME]) for a in spans] == [
        ("killed", "blocked"),
        ("killed", "blocked"),
        ("replayed", "ok"),
        ("denied", "blocked"),
    ]
    assert spans[0][semconv.GEN_AI_TOOL_CALL_ARGUMENTS] == '{"table": "a"}'


def test_a_target_whose_tools_cannot_make_a_gateway_fails_its_runs(clickhouse_store: ClickHouseStore) -> None:
    target = ModelSwapTarget(HastyModel)
    target.tools = {"kb.search": "not a function"}  # type: ignore[dict-item]  # what a broken target does
    report = replay(stored(clickhouse_store, recorded_scenarios("custom_agent"), limit=1), target)
    [run] = report.runs
    assert run.status == "failed"
    assert run.reason is not None
    assert "cannot make a gateway: tool 'kb.search' is not callable" in run.reason
    assert report.verdict == "error"


# --- what a recording holds ------------------------------------------------------------------------------


def test_a_recorded_tool_error_is_replayed_as_that_error(clickhouse_store: ClickHouseStore) -> None:
    [recorded] = stored(clickhouse_store, recorded_tool_error())
    assert recorded.stop_reason == "error"
    [call] = recorded.calls
    assert (call.tool, call.outcome) == ("orders.lookup", "error")
    assert "orders API key missing" in call.error
    report = replay_on(CUSTOM, [recorded])
    [run] = report.runs
    assert run.status == "match", run.divergences
    assert run.replayed_stop_reason == "error"
    assert run.target_error is not None
    assert "ReplayedToolError: PermissionError: orders API key missing" in run.target_error


def test_a_tool_error_shows_how_runtimes_differ(clickhouse_store: ClickHouseStore) -> None:
    # The custom loop lets a tool's exception end the run (`error`); the Agents SDK tells the model
    # the tool failed and the run goes on, so the same recording completes there: a real difference.
    report = replay_on(AGENTS_SDK, stored(clickhouse_store, recorded_tool_error()))
    [run] = report.runs
    assert run.status == "diverged"
    assert run.divergences[0] == "stop reason error -> completed"
    assert run.sequence_similarity == 1.0  # the same call, answered with the same recorded error
    assert run.target_error is None
    assert report.verdict == "fail"


def test_runs_recorded_without_content_capture_are_skipped_with_the_reason(clickhouse_store: ClickHouseStore) -> None:
    uncaptured = recorded_scenarios("custom_agent", capture=False)
    recordings = stored(clickhouse_store, uncaptured, recorded_scenarios("custom_agent"))
    assert len(recordings) == 10
    report = replay_on(CUSTOM, recordings)
    skipped = [run for run in report.runs if run.status == "skipped"]
    assert {run.run_id for run in skipped} == set(uncaptured.run_ids)
    assert all(run.reason is not None and "content capture was off" in run.reason for run in skipped)
    assert report.verdict == "pass"  # the five recorded runs replay perfectly; skips are not failures
    assert report.to_dict()["summary"]["skipped"] == 5

    only_uncaptured = replay_on(
        CUSTOM, load_recordings(clickhouse_store, RecordingFilter(run_ids=tuple(uncaptured.run_ids)))
    )
    assert only_uncaptured.verdict == "empty"


def test_filters_select_top_level_runs_and_report_unknown_ids(clickhouse_store: ClickHouseStore) -> None:
    fleet = recorded_scenarios("custom_agent")
    assert [run.tenant for run in stored(clickhouse_store, fleet, tenant="initech")] == ["initech"]
    assert len(load_recordings(clickhouse_store, RecordingFilter(limit=2))) == 2
    assert load_recordings(clickhouse_store, RecordingFilter(agent="nobody")) == []
    [missing, found] = sorted(
        load_recordings(clickhouse_store, RecordingFilter(run_ids=("no-such-run", fleet.run_ids[0]))),
        key=lambda run: run.missing,
        reverse=True,
    )
    assert missing.skip_reason is not None
    assert "not found" in missing.skip_reason
    assert found.run_id == fleet.run_ids[0]
    assert found.input == ORDER_TICKET


# --- bad targets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_here:factory", "cannot import 'no_such_module_here'"),
        ("agentwatch_examples.custom_agent:no_such_factory", "has no attribute 'no_such_factory'"),
        ("agentwatch_examples.custom_agent:AGENT", "is a str, not callable"),
        ("agentwatch_examples.custom_agent:scoped_credentials", "failed: TypeError"),
        ("agentwatch_examples.custom_agent:ScriptedModel", "returned a ScriptedModel without runtime"),
        ("no-colon-here", "must be MODULE:FACTORY"),
        ("/nonexistent/target.py:factory", "no such file"),
    ],
)
def test_a_bad_target_is_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(TargetError, match=message.replace("(", r"\(")):
        load_target(spec)
