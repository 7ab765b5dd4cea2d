"""``agentwatch demo`` and the examples: the full pipeline end to end, and every scenario as documented.

The demo opens its own embedded store, so it runs as a child process (chDB hosts one engine path
per process and the test process already has one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.collectors._examples import load_example
from agentwatch.collectors.demo.summary import summarize

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentwatch.collectors.cli.main", "demo", "--runs", "80", "--parity-runs", "20", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_demo_stores_every_run_and_reports_the_canary(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["expected_runs"] == report["stored_runs"] == 160
    by_track: dict[str, dict[str, int]] = {}
    for row in report["stop_reasons"]:
        by_track.setdefault(row["track"], {})[row["stop_reason"]] = row["runs"]
    assert sum(by_track["stable"].values()) == sum(by_track["canary"].values()) == 80
    assert {"completed", "max_tool_calls", "policy_denied"} <= set(by_track["canary"])
    # the canary is subtly worse: more budget stops and a higher cost per run
    assert by_track["canary"]["max_tool_calls"] > by_track["stable"].get("max_tool_calls", 0)
    cost = {row["track"]: row for row in report["cost"]}
    assert cost["canary"]["mean_usd"] > cost["stable"]["mean_usd"] > 0
    assert cost["canary"]["mean_steps"] > cost["stable"]["mean_steps"]
    denied = {(row["tool"], row["disposition"]) for row in report["denials"]}
    assert ("db.drop_table", "denied") in denied
    # the same tickets on the three runtimes, read back from ClickHouse: stored, and alike
    parity = {row["runtime"]: row for row in report["runtime_parity"]}
    assert list(parity) == ["custom", "openai-agents", "langgraph"]
    assert all(row["runs"] == 20 for row in parity.values())
    custom = {key: value for key, value in parity["custom"].items() if key != "runtime"}
    for runtime in ("openai-agents", "langgraph"):
        assert {key: value for key, value in parity[runtime].items() if key != "runtime"} == custom, runtime
    assert custom["stop_reasons"]["completed"] < 20  # the seed's tickets include stops, so parity is not trivial
    # the five example tickets recorded on each runtime, replayed onto the other from ClickHouse
    replays = {(row["recorded_on"], row["replayed_onto"]): row for row in report["replay"]}
    assert set(replays) == {("custom", "openai-agents"), ("openai-agents", "custom")}
    for row in replays.values():
        assert row["replayed"] == row["stop_reasons_agree"] == 5
        assert row["tool_sequence_similarity"] == 1.0
        assert row["steps_delta"] == 0
        assert row["verdict"] == "pass"
    # the data stays where `agentwatch runs` looks by default
    assert (tmp_path / "agentwatch-data").is_dir()
    runs = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentwatch.collectors.cli.main",
            "runs",
            "--clickhouse",
            "chdb://./agentwatch-data",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert runs.returncode == 0, runs.stderr
    assert len(json.loads(runs.stdout)["runs"]) == 50


def test_demo_table_names_the_sections_and_next_steps(tmp_path: Path) -> None:
    done = _demo(tmp_path)
    assert done.returncode == 0, done.stderr
    # the Agents SDK keeps its own trace processor, whose missing-key warning the demo drops
    assert "OPENAI_API_KEY" not in done.stderr
    for needle in (
        "Runs by stop reason",
        "support/canary",
        "support/stable",
        "Budgets hit",
        "Tool calls the gateway stopped",
        "Top tools",
        "/metrics",
        "agentwatch runs",
        "agentwatch trace RUN_ID",
        "Runtime parity",
        "Replay for migration parity",
        "same stop reasons, steps, tool calls and cost on every runtime",
    ):
        assert needle in done.stdout, needle


def test_custom_agent_scenarios_end_as_documented() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    load_example("custom_agent").run_scenarios(tracer_provider=provider)
    provider.shutdown()
    summary = summarize(exporter.get_finished_spans())
    reasons = [run.stop_reason for run in summary.runs]
    assert reasons == ["completed", "max_tool_calls", "policy_denied", "completed", "approval_rejected"]
    budget_run = summary.runs[1]
    assert budget_run.tool_calls == 12
    assert budget_run.budget_exhausted == "tool_calls"
    assert summary.gateway[("db.drop_table", "denied", "blocked")] == 1
    assert summary.gateway[("ticket.close", "approved", "ok")] == 1
    assert summary.gateway[("email.send", "rejected", "blocked")] == 1
    assert summary.gateway[("kb.search", "allowed", "ok")] == 12
    assert all(run.cost_usd > 0 for run in summary.runs)
