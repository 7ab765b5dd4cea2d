"""``agentwatch demo`` and the custom-loop example: every scenario ends the way the example says."""

from __future__ import annotations

import json

import pytest

from agentwatch.collectors.cli import main


def test_demo_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "completed",
        "max_tool_calls",
        "policy_denied",
        "approval_rejected",
        "tool_calls 1",
        "db.drop_table",
    ):
        assert needle in out, needle


def test_demo_json_matches_the_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    reasons = [run["stop_reason"] for run in report["runs"]]
    assert reasons == ["completed", "max_tool_calls", "policy_denied", "completed", "approval_rejected"]
    budget_run = report["runs"][1]
    assert budget_run["tool_calls"] == 12
    assert budget_run["budget_exhausted"] == "tool_calls"
    gateway = {(g["tool"], g["disposition"]): g["calls"] for g in report["gateway"]}
    assert gateway[("db.drop_table", "denied")] == 1
    assert gateway[("ticket.close", "approved")] == 1
    assert gateway[("email.send", "rejected")] == 1
    assert gateway[("kb.search", "allowed")] == 12
    assert all(run["cost_usd"] > 0 for run in report["runs"])
