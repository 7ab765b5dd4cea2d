"""OpenLIT, for real, in its own environment, into a real collector.

OpenLIT pins ``openai<3`` and OpenTelemetry 1.45.1, so it runs in ``.venv-openlit`` (``make test``
builds it from ``tests/support/openlit-requirements.txt``): ``openlit_export.py`` runs a scenario
of ``_dialects`` there and exports its spans over OTLP/HTTP to the collector this test started.
The same assertions as ``test_dialects_real``: one run with the stub's exact numbers, counted once.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _otlp_clients import Collector, running_collector
from _paths import REPO

from agentwatch.collectors import metric_names as m
from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE

pytestmark = pytest.mark.integration

pytest_plugins = ["_chstore"]

PYTHON = REPO / ".venv-openlit" / "bin" / "python"
SCRIPT = REPO / "tests" / "support" / "openlit_export.py"


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    if not PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PYTHON} is missing: make test builds it (the OpenLIT test must run in CI)")
        pytest.skip(f"{PYTHON} is missing: run make test (or make .venv-openlit/.installed)")
    with running_collector(clickhouse_url, tmp_path) as running:
        yield running


def run_openlit(collector: Collector, variant: str) -> dict[str, object]:
    done = subprocess.run(
        [str(PYTHON), str(SCRIPT), collector.traces_url, variant, "openlit-app"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "OTEL_SDK_DISABLED": "false"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    collector.drain()
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def tokens(collector: Collector, direction: str) -> float:
    return sum(
        s.value
        for family in collector.service.metrics.registry.collect()
        for s in family.samples
        if s.name == m.LLM_TOKENS_TOTAL and s.labels.get("direction") == direction
    )


@pytest.mark.parametrize(
    ("variant", "agent", "runtime", "stop_reason"),
    [
        ("agents", "support", "openai_agents", "completed"),
        ("agents-max_turns", "support", "openai_agents", "max_steps"),
        ("agents-guardrail", "support", "openai_agents", "guardrail"),
        ("langgraph", "support", "langgraph", "completed"),
    ],
    ids=["agents", "agents-max-turns", "agents-guardrail", "langgraph"],
)
def test_openlit_gives_one_run_with_its_exact_numbers(
    collector: Collector, variant: str, agent: str, runtime: str, stop_reason: str
) -> None:
    done = run_openlit(collector, variant)
    usage = done["usage"]
    assert isinstance(usage, dict)
    (run,) = collector.query(
        f"SELECT AgentName, Runtime, StopReason, LlmCalls, ToolCalls, InputTokens, OutputTokens, CostUsd "
        f"FROM {RUNS_TABLE} FINAL"
    )
    assert (run["AgentName"], run["Runtime"], run["StopReason"]) == (agent, runtime, stop_reason)
    assert (run["LlmCalls"], run["ToolCalls"]) == (done["llm_calls"], done["tool_calls"])
    assert (run["InputTokens"], run["OutputTokens"]) == (usage["input_tokens"], usage["output_tokens"])
    assert collector.count(TOOL_CALLS_TABLE) == done["tool_calls"]
    assert tokens(collector, "input") == usage["input_tokens"]  # OpenLIT's copies on agent spans not summed
    assert tokens(collector, "output") == usage["output_tokens"]


def test_openlit_client_calls_alone_count_their_tokens(collector: Collector) -> None:
    done = run_openlit(collector, "openai")
    usage = done["usage"]
    assert isinstance(usage, dict)
    assert collector.count(RUNS_TABLE) == 0
    assert tokens(collector, "input") == usage["input_tokens"]
