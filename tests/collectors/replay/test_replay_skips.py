"""``agentwatch replay`` in-process: skipped runs read as one line per cause with its count, then the summary."""

from __future__ import annotations

import pytest
from _chrows import engine_url
from _replaydata import recorded_scenarios

from agentwatch.collectors.cli.main import build_parser
from agentwatch.collectors.cli.replay import render_report, skip_cause
from agentwatch.collectors.replay.parity import ParityReport, ParityThresholds, RunParity
from agentwatch.collectors.store.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration  # a real embedded engine: not in `make test-fast`

pytest_plugins = ["_chstore"]

CUSTOM = "agentwatch_examples.custom_agent:replay_target"
NO_CAPTURE = "no recording: content capture was off when it ran (its input was not captured)"
NOT_FOUND = "not found in the store (or it belongs to another tenant)"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = build_parser().parse_args(["replay", *argv])
    code: int = args.handler(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_skipped_runs_are_grouped_by_reason_with_counts(
    clickhouse_store: ClickHouseStore,
    clickhouse_engine: ClickHouseStore,
    clickhouse_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    captured = recorded_scenarios("custom_agent")
    uncaptured = recorded_scenarios("custom_agent", capture=False)
    captured.load(clickhouse_store)
    uncaptured.load(clickhouse_store)
    assert not set(captured.run_ids) & set(uncaptured.run_ids)
    missing = [f"{index:032x}" for index in (1, 2)]
    store_url = engine_url(clickhouse_engine, clickhouse_database)

    run_ids = [*captured.run_ids, *uncaptured.run_ids, *missing]
    code, out, err = run_cli(["--clickhouse", store_url, "--target", CUSTOM, *run_ids], capsys)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].endswith(": 12 recorded runs")

    # one line per cause, the most frequent first, with the count and a few run ids
    skip_lines = [line for line in lines if line.startswith("skipped ")]
    assert len(skip_lines) == 2, out
    assert skip_lines[0].startswith(f"skipped 5 runs: {NO_CAPTURE}; ")
    assert skip_lines[0].endswith(" and 2 more")
    assert sum(run_id in skip_lines[0] for run_id in uncaptured.run_ids) == 3
    assert skip_lines[1] == f"skipped 2 runs: {NOT_FOUND}; {missing[0]}, {missing[1]}"

    # not one line per skipped run: skipped runs are neither table rows nor detail blocks
    for run_id in [*uncaptured.run_ids, *missing]:
        assert sum(run_id[:12] in line for line in lines) <= 1, run_id
    assert not any(line.rstrip().endswith("skipped") for line in lines)
    assert sum(line.endswith("match") for line in lines) == 5

    # then the summary
    summary = lines.index("replayed 5, matching 5, diverged 0, skipped 7, failed 0")
    assert summary > lines.index(skip_lines[-1])
    assert lines[-1] == "-> parity met"


def test_only_skipped_runs_print_no_table_and_exit_three(
    clickhouse_store: ClickHouseStore,
    clickhouse_engine: ClickHouseStore,
    clickhouse_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uncaptured = recorded_scenarios("custom_agent", capture=False)
    uncaptured.load(clickhouse_store)
    store_url = engine_url(clickhouse_engine, clickhouse_database)
    code, out, _ = run_cli(["--clickhouse", store_url, "--target", CUSTOM], capsys)
    assert code == 3
    lines = out.splitlines()
    assert not any(line.startswith("RUN ") for line in lines)
    [skip_line] = [line for line in lines if line.startswith("skipped ")]
    assert skip_line.startswith(f"skipped 5 runs: {NO_CAPTURE}; ")
    assert "replayed 0, matching 0, diverged 0, skipped 5, failed 0" in lines


def _skipped(run_id: str, reason: str) -> RunParity:
    return RunParity(run_id, "support", "acme", "custom", "skipped", reason=reason)


def test_per_run_details_of_a_reason_do_not_split_its_group() -> None:
    assert skip_cause("tool call 2 (kb.search) was truncated at capture") == (
        "a tool call (kb.search) was truncated at capture"
    )
    assert skip_cause("only 1 of its 3 tool calls are in the store") == "some of its tool calls are not in the store"
    runs = (
        _skipped("a" * 32, "tool call 1 (kb.search) was truncated at capture"),
        _skipped("b" * 32, "tool call 3 (kb.search) was truncated at capture"),
        _skipped(
            "c" * 32, "its input was truncated at capture (raise AGENTWATCH_MAX_CONTENT_LENGTH to record it whole)"
        ),
    )
    text = render_report(ParityReport("t:f", "custom", ParityThresholds(), runs))
    assert [line for line in text.splitlines() if line.startswith("skipped ")] == [
        f"skipped 2 runs: a tool call (kb.search) was truncated at capture; {'a' * 32}, {'b' * 32}",
        "skipped 1 run: its input was truncated at capture (raise AGENTWATCH_MAX_CONTENT_LENGTH to record it whole)"
        f"; {'c' * 32}",
    ]
