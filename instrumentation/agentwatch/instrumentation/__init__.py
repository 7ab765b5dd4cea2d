"""agentwatch instrumentation: the control layer for agent runs, emitted as OpenTelemetry spans.

Wrap a run with ``agent_run``, send every tool call through a ``ToolGateway`` (default deny,
approvals, scoped credentials, kill switch, idempotency), set a ``Budget``, and read the
``StopReason`` when the block exits::

    from agentwatch.instrumentation import Budget, Policy, ToolGateway, agent_run, configure

    configure(service_name="support-agent")
    gateway = ToolGateway(policy=Policy(allow=["kb.search"]), tools={"kb.search": search})
    with agent_run("support", budget=Budget(max_steps=25), gateway=gateway) as run:
        with run.step():
            run.call_tool("kb.search", {"query": "refund"})
    print(run.stop_reason)

Nothing here imports the collector or the dashboards; optional runtimes are imported lazily.
"""

from __future__ import annotations

from agentwatch.instrumentation._approval import ApprovalDecision, ApprovalRequest, Approver
from agentwatch.instrumentation._auto import instrument, uninstrument
from agentwatch.instrumentation._budget import Budget
from agentwatch.instrumentation._config import AgentWatchConfig, KillSwitchSettings, LoggingSettings, load_config
from agentwatch.instrumentation._gateway import CredentialsProvider, ToolGateway
from agentwatch.instrumentation._llm import LLMCall
from agentwatch.instrumentation._policy import Policy, PolicyDecision
from agentwatch.instrumentation._processor import RunAttributesSpanProcessor
from agentwatch.instrumentation._remote import RemoteTool
from agentwatch.instrumentation._remote_control import RemoteApprover, RemoteKillSwitch
from agentwatch.instrumentation._replay import RecordedCall, Recording, ReplayedToolError
from agentwatch.instrumentation._run import AgentRun, RunScope, agent_run, get_current_run
from agentwatch.instrumentation._runapi import Usage
from agentwatch.instrumentation._settings import InstrumentationSettings
from agentwatch.instrumentation._setup import configure, reset_configuration
from agentwatch.instrumentation._step import StepScope
from agentwatch.instrumentation.errors import (
    AgentWatchError,
    ApprovalRejected,
    BudgetExceeded,
    ConfigError,
    GuardrailTripped,
    KillSwitchEngaged,
    RunStopped,
    ToolDenied,
    UnknownTool,
)
from agentwatch.instrumentation.killswitch import EnvKillSwitch, FileKillSwitch, KillSwitch, MemoryKillSwitch
from agentwatch.instrumentation.semconv import StopReason, ToolDisposition, ToolOutcome, ToolRisk, Track

__all__ = [
    "AgentRun",
    "AgentWatchConfig",
    "AgentWatchError",
    "ApprovalDecision",
    "ApprovalRejected",
    "ApprovalRequest",
    "Approver",
    "Budget",
    "BudgetExceeded",
    "ConfigError",
    "CredentialsProvider",
    "EnvKillSwitch",
    "FileKillSwitch",
    "GuardrailTripped",
    "InstrumentationSettings",
    "KillSwitch",
    "KillSwitchEngaged",
    "KillSwitchSettings",
    "LLMCall",
    "LoggingSettings",
    "MemoryKillSwitch",
    "Policy",
    "PolicyDecision",
    "RecordedCall",
    "Recording",
    "RemoteApprover",
    "RemoteKillSwitch",
    "RemoteTool",
    "ReplayedToolError",
    "RunAttributesSpanProcessor",
    "RunScope",
    "RunStopped",
    "StepScope",
    "StopReason",
    "ToolDenied",
    "ToolDisposition",
    "ToolGateway",
    "ToolOutcome",
    "ToolRisk",
    "Track",
    "UnknownTool",
    "Usage",
    "agent_run",
    "configure",
    "get_current_run",
    "instrument",
    "load_config",
    "reset_configuration",
    "uninstrument",
]
