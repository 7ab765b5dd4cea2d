"""``instrument()`` dispatch and ``agentwatch-instrument``: a program traced with no code change.

The launcher is exercised for real: a child Python process runs under ``agentwatch-instrument``
with only ``OTEL_*`` variables, and its spans must arrive at a running collector over OTLP/HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _otlp_clients import running_collector

from agentwatch.instrumentation import instrument, uninstrument
from agentwatch.instrumentation._auto import RUNTIMES, available_runtimes, instrumented_runtimes
from agentwatch.instrumentation._launcher import DISABLED_ENV, child_environment
from agentwatch.instrumentation.errors import ConfigError

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

LAUNCHER = Path(sys.executable).with_name("agentwatch-instrument")

# A program that knows nothing of the collector: it only uses agentwatch's run API, and reports
# which tracer provider it got from the launcher.
PROGRAM = textwrap.dedent(
    """
    from opentelemetry import trace
    from agentwatch.instrumentation import Budget, Policy, ToolGateway, agent_run

    provider = trace.get_tracer_provider()
    print("provider", type(provider).__module__, provider.resource.attributes.get("service.name"))
    gateway = ToolGateway(policy=Policy(allow=["lookup"]), tools={"lookup": lambda q: {"ok": True}})
    with agent_run("launched-agent", budget=Budget(max_steps=3), gateway=gateway) as run:
        with run.step():
            run.call_tool("lookup", {"q": "x"})
            run.call_tool("delete_everything", {})
    print("stop", run.stop_reason.value)
    provider.shutdown()
    """
)


def test_every_runtime_names_its_package_and_adapter() -> None:
    assert set(RUNTIMES) == {"openai-agents", "langgraph", "mcp"}
    assert set(available_runtimes()) <= set(RUNTIMES)


def test_unknown_runtime_is_a_config_error_and_changes_nothing() -> None:
    before = instrumented_runtimes()
    with pytest.raises(ConfigError, match="unknown runtime"):
        instrument(runtimes=["crewai"])
    assert instrumented_runtimes() == before


def test_uninstrument_without_instrument_is_a_no_op() -> None:
    uninstrument()
    assert instrumented_runtimes() == []


def test_child_environment_puts_the_autoload_folder_first_and_keeps_the_users_path(tmp_path: Path) -> None:
    env = child_environment({"PYTHONPATH": str(tmp_path), "OTEL_SERVICE_NAME": "svc"}, runtimes=["langgraph"])
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths[0].endswith("_autoload")
    assert (Path(paths[0]) / "sitecustomize.py").is_file()
    assert paths[1] == str(tmp_path)
    assert env["AGENTWATCH_INSTRUMENT_RUNTIMES"] == "langgraph"
    assert env["OTEL_SERVICE_NAME"] == "svc"


def _launch(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LAUNCHER), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_launcher_refuses_unknown_runtimes_and_missing_commands(tmp_path: Path) -> None:
    env = dict(os.environ)
    unknown = _launch("--runtimes", "crewai", sys.executable, "-c", "pass", env=env, cwd=tmp_path)
    assert unknown.returncode == 2
    assert "unknown runtime" in unknown.stderr
    missing = _launch("no-such-command-here", env=env, cwd=tmp_path)
    assert missing.returncode == 127
    assert "command not found" in missing.stderr


def test_launched_program_is_traced_from_otel_variables_alone(clickhouse_url: str, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(PROGRAM, encoding="utf-8")
    with running_collector(clickhouse_url, tmp_path) as collector:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "AGENTWATCH_"))}
        env.update(OTEL_SERVICE_NAME="launched-service", OTEL_EXPORTER_OTLP_ENDPOINT=collector.base_url)
        result = _launch(sys.executable, str(script), env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "provider opentelemetry.sdk.trace launched-service" in result.stdout
        assert "stop policy_denied" in result.stdout
        deadline = time.monotonic() + 30
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and not rows:
            collector.drain()
            rows = collector.query(
                "SELECT ServiceName, AgentName, StopReason, ToolCalls FROM agent_runs FINAL "
                "WHERE AgentName = 'launched-agent'"
            )
        assert rows == [
            {
                "ServiceName": "launched-service",
                "AgentName": "launched-agent",
                "StopReason": "policy_denied",
                "ToolCalls": 2,
            }
        ]
        denied = collector.query(
            "SELECT ToolName, Disposition FROM agent_tool_calls WHERE AgentName = 'launched-agent' ORDER BY Timestamp"
        )
        assert denied == [
            {"ToolName": "lookup", "Disposition": "allowed"},
            {"ToolName": "delete_everything", "Disposition": "denied"},
        ]


def test_disabled_launcher_leaves_the_program_untraced(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "AGENTWATCH_"))}
    env[DISABLED_ENV] = "true"
    result = _launch(
        sys.executable,
        "-c",
        "from opentelemetry import trace; print(type(trace.get_tracer_provider()).__name__)",
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ProxyTracerProvider"


# A LangGraph program that never imports agentwatch: the launcher alone must turn its graph
# invocations into runs (with steps and stop reasons) at the collector.
LANGGRAPH_PROGRAM = textwrap.dedent(
    """
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph


    class State(TypedDict):
        count: int


    def bump(state: State) -> State:
        return {"count": state["count"] + 1}


    builder = StateGraph(State)
    builder.add_node("bump", bump)
    builder.add_edge(START, "bump")
    builder.add_edge("bump", END)
    graph = builder.compile(name="plain-graph")
    for _ in range(3):
        assert graph.invoke({"count": 0}) == {"count": 1}
    from opentelemetry import trace

    trace.get_tracer_provider().shutdown()
    print("done")
    """
)


def test_launcher_instruments_an_unmodified_langgraph_program(clickhouse_url: str, tmp_path: Path) -> None:
    script = tmp_path / "graph_app.py"
    script.write_text(LANGGRAPH_PROGRAM, encoding="utf-8")
    with running_collector(clickhouse_url, tmp_path) as collector:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "AGENTWATCH_"))}
        env.update(OTEL_SERVICE_NAME="graph-service", OTEL_EXPORTER_OTLP_ENDPOINT=collector.base_url)
        result = _launch("--runtimes", "langgraph", sys.executable, str(script), env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("done")
        deadline = time.monotonic() + 30
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(rows) < 3:
            collector.drain()
            rows = collector.query(
                "SELECT Runtime, StopReason, ServiceName FROM agent_runs FINAL WHERE ServiceName = 'graph-service'"
            )
        assert rows == [{"Runtime": "langgraph", "StopReason": "completed", "ServiceName": "graph-service"}] * 3


def test_instrument_wraps_every_installed_runtime_and_uninstrument_restores_them() -> None:
    import agents
    from langchain_core.tracers import context as tracer_context
    from mcp import ClientSession

    runner_before = dict(agents.Runner.__dict__)
    hooks_before = list(tracer_context._configure_hooks)
    call_tool_before = ClientSession.__dict__["call_tool"]
    try:
        assert instrument() == ["openai-agents", "langgraph", "mcp"]
        assert instrument() == ["openai-agents", "langgraph", "mcp"]  # idempotent
        assert ClientSession.__dict__["call_tool"] is not call_tool_before
        assert agents.Runner.__dict__["run_sync"] is not runner_before["run_sync"]
        assert len(tracer_context._configure_hooks) == len(hooks_before) + 1
        uninstrument(runtimes=["langgraph"])
        assert instrumented_runtimes() == ["openai-agents", "mcp"]
        assert tracer_context._configure_hooks == hooks_before
    finally:
        uninstrument()
    assert instrumented_runtimes() == []
    assert dict(agents.Runner.__dict__) == runner_before
    assert tracer_context._configure_hooks == hooks_before
    assert ClientSession.__dict__["call_tool"] is call_tool_before
