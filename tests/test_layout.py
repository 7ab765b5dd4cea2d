"""Repository rules: the import direction between source roots, exact ``__all__``, no namespace traps."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = ("instrumentation", "collectors", "dashboards", "alerts")
# The generators import names only: metric and label names, and the semantic contract.
_NAMES_ONLY = {"agentwatch.collectors.metric_names", "agentwatch.instrumentation.semconv"}
# What each root may import from the others (leaf modules only).
ALLOWED = {
    "instrumentation": set(),
    "collectors": {"agentwatch.instrumentation.semconv", "agentwatch.instrumentation.redaction"},
    "dashboards": _NAMES_ONLY,
    "alerts": _NAMES_ONLY,
}
# The main CLI registers the generators' commands, lazily; the only modules of theirs it reaches.
CLI_COMMAND_MODULES = (
    "agentwatch.dashboards.cli",
    "agentwatch.alerts.cli",
    "agentwatch.instrumentation.integrations.mcp.proxy",  # `agentwatch mcp-proxy` delegates to it
)
LEAF_MODULES = ("semconv", "redaction")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` reaches a.b.c (a submodule or a name of a.b): judge the full name
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


# Which package of the collector may import which: the data path, lowest first. A package may
# always import its own modules; module-level and function-level imports count alike.
COLLECTOR_PACKAGES: dict[str, set[str]] = {
    "metric_names": set(),  # the metric contract: names only, for dashboards and alerts too
    "dialect_names": set(),  # attribute names of the GenAI dialects agentwatch reads, for ingest and read
    "_examples": set(),  # finds the shipped example agents
    "metrics": {"metric_names"},
    "store": {"metrics"},
    "read": {"store", "dialect_names"},
    "config": {"store", "read"},  # settings validate store URLs and time windows with their owners' parsers
    "ingest": {"config", "store", "metrics", "dialect_names"},
    "drift": {"config", "store", "read", "metrics"},
    "replay": {"store", "read", "_examples"},
    "control": {"config", "store", "read"},  # kill switch, approvals, audit: state in the store, HTTP routes
    "service": {"config", "ingest", "store", "read", "drift", "replay", "metrics", "control"},
    "demo": {"service", "config", "store", "read", "drift", "replay", "metrics", "metric_names", "_examples"},
    "cli": {"service", "config", "store", "read", "drift", "replay", "metrics", "demo", "_examples", "control"},
}
# What each collector package may import from the other source roots, beyond ALLOWED["collectors"].
COLLECTOR_EXTRA_ROOTS: dict[str, tuple[str, ...]] = {
    # replay runs agents under a replay gateway: the public instrumentation API, never its internals
    "replay": ("agentwatch.instrumentation",),
    "demo": ("agentwatch.instrumentation",),
    # the costs of runs read from other GenAI dialects: the same price list and file format as the SDK's
    "ingest": ("agentwatch.instrumentation.pricing",),
    "config": ("agentwatch.instrumentation.pricing", "agentwatch.instrumentation.errors"),
    # the control plane speaks the kill switch's scope syntax (parse, build, split)
    "control": ("agentwatch.instrumentation.killswitch",),
    # the main CLI registers the generators' commands (and hands the rules' writer to `generate`), lazily
    "cli": CLI_COMMAND_MODULES,
}


def _public_instrumentation_name(name: str) -> bool:
    """``agentwatch.instrumentation.<name>`` with a public name (the package's API), never a ``_module``."""
    parts = name.split(".")
    return parts[:2] == ["agentwatch", "instrumentation"] and len(parts) == 3 and not parts[2].startswith("_")


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "agentwatch":
        return parts[1]
    return None


def _collector_package(path: Path) -> str:
    """``collectors/agentwatch/collectors/ingest/otlp.py`` → ``ingest``; a top-level module is its own package."""
    relative = path.relative_to(ROOT / "collectors" / "agentwatch" / "collectors")
    return relative.parts[0].removesuffix(".py")


def _extra_root_allowed(package: str, name: str) -> bool:
    for allowed in COLLECTOR_EXTRA_ROOTS.get(package, ()):
        if allowed == "agentwatch.instrumentation":
            if _public_instrumentation_name(name) or name == allowed:
                return True
        elif name == allowed or name.startswith(f"{allowed}."):
            return True
    return False


@pytest.mark.parametrize("root", SOURCE_ROOTS)
def test_import_direction(root: str) -> None:
    violations = []
    for path in (ROOT / root / "agentwatch").rglob("*.py"):
        package = _collector_package(path) if root == "collectors" else ""
        for name in _imports(path):
            other = _package_of(name)
            if other is None or other == root or other not in SOURCE_ROOTS:
                continue
            if name in ALLOWED[root] or any(name.startswith(f"{allowed}.") for allowed in ALLOWED[root]):
                continue
            if root == "collectors" and _extra_root_allowed(package, name):
                continue
            violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not violations, "\n".join(violations)


def test_every_collector_package_is_on_the_map() -> None:
    base = ROOT / "collectors" / "agentwatch" / "collectors"
    found = {p.name for p in base.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    found |= {p.stem for p in base.glob("*.py") if p.name != "__init__.py"}
    assert found == set(COLLECTOR_PACKAGES), "add the new package to COLLECTOR_PACKAGES with what it may import"


def test_collector_packages_import_only_what_the_map_allows() -> None:
    violations = []
    for path in (ROOT / "collectors" / "agentwatch" / "collectors").rglob("*.py"):
        if path.name == "__init__.py" and path.parent.name == "collectors":
            continue
        package = _collector_package(path)
        for name in _imports(path):
            parts = name.split(".")
            if parts[:2] != ["agentwatch", "collectors"] or len(parts) < 3:
                continue
            target = parts[2]
            if target != package and target not in COLLECTOR_PACKAGES[package]:
                violations.append(f"{path.relative_to(ROOT)} ({package}) imports {name} ({target})")
    assert not violations, "\n".join(violations)


def test_the_collector_map_has_no_cycle() -> None:
    from graphlib import TopologicalSorter

    TopologicalSorter(COLLECTOR_PACKAGES).prepare()  # raises CycleError on a cycle


def test_metric_names_import_only_typing() -> None:
    """The generators import the metric names; they must not pull in prometheus_client or the service."""
    path = ROOT / "collectors" / "agentwatch" / "collectors" / "metric_names.py"
    runtime = {name for name in _imports(path) if not name.startswith(("__future__.", "collections.abc."))}
    assert runtime <= {"typing.Final", "typing.TYPE_CHECKING"}, runtime


@pytest.mark.parametrize("leaf", LEAF_MODULES)
def test_leaf_modules_import_nothing_from_agentwatch_but_each_other(leaf: str) -> None:
    path = ROOT / "instrumentation" / "agentwatch" / "instrumentation" / f"{leaf}.py"
    imported = {name for name in _imports(path) if name.startswith("agentwatch")}
    assert imported == set(), imported


def test_namespace_traps() -> None:
    for root in SOURCE_ROOTS:
        assert not (ROOT / root / "agentwatch" / "__init__.py").exists(), (
            f"{root}/agentwatch/__init__.py breaks PEP 420"
        )
        stray = [p.name for p in (ROOT / root).glob("*.py")]
        assert not stray, f"top-level modules under {root}/: {stray}"


def _public_modules() -> list[str]:
    modules = []
    for root in SOURCE_ROOTS:
        for init in (ROOT / root / "agentwatch").rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / root)
            modules.append(".".join(relative.parts))
    return sorted(modules)


EXPECTED_ALL = {
    "agentwatch.instrumentation": {
        "AgentRun", "AgentWatchConfig", "AgentWatchError", "ApprovalDecision", "ApprovalRejected", "ApprovalRequest",
        "Approver", "Budget", "BudgetExceeded", "ConfigError", "CredentialsProvider", "EnvKillSwitch",
        "FileKillSwitch", "GuardrailTripped", "InstrumentationSettings", "KillSwitch", "KillSwitchEngaged",
        "KillSwitchSettings", "LLMCall", "LoggingSettings", "MemoryKillSwitch", "Policy", "PolicyDecision",
        "RecordedCall", "Recording", "RemoteApprover", "RemoteKillSwitch", "RemoteTool", "ReplayedToolError",
        "RunAttributesSpanProcessor", "RunScope", "RunStopped", "StepScope", "StopReason", "ToolDenied",
        "ToolDisposition", "ToolGateway", "ToolOutcome", "ToolRisk", "Track", "UnknownTool", "Usage", "agent_run",
        "configure", "get_current_run", "instrument", "load_config", "reset_configuration", "uninstrument",
    },
    "agentwatch.instrumentation.integrations": set(),
    "agentwatch.instrumentation.integrations.mcp": {
        "DISABLED_ENV", "IDEMPOTENCY_META_KEY", "McpGovernance", "McpInstrumentor", "McpToolError", "OnDenied",
        "SessionInfo", "calling_server", "govern_session", "governs_mcp_calls", "instrument", "qualified_name",
        "server_label", "uninstrument",
    },
    "agentwatch.instrumentation.integrations.mcp.proxy": {
        "RUNTIME", "Listen", "McpProxy", "ProxySettings", "Upstream", "main", "proxy_settings",
    },
    "agentwatch.instrumentation.integrations.langgraph": {
        "GOVERNED_METADATA_KEY", "LANGGRAPH_NODES", "LANGGRAPH_RECURSION_LIMIT", "LANGGRAPH_STEP", "METADATA_AGENT",
        "METADATA_CONVERSATION_ID", "METADATA_TENANT_ID", "METADATA_TRACK", "METADATA_VERSION", "RUNTIME",
        "UNGOVERNED_RULE", "AgentwatchCallbackHandler", "GovernedTool", "GraphRunResult", "Idempotency",
        "LangGraphInstrumentor", "OnDenied", "ainvoke_graph", "default_input", "default_output", "gateway_tools",
        "govern_tools", "governed_tool_node", "installed_handler", "instrument", "invoke_graph", "is_instrumented",
        "lc_tool_name", "tool_functions", "uninstrument",
    },
    "agentwatch.instrumentation.integrations.openai_agents": {
        "RUNTIME", "OpenAIAgentsInstrumentor", "function_tools", "govern_tools", "instrument", "is_instrumented",
        "tool_implementations", "uninstrument",
    },
    "agentwatch.collectors": set(),
    "agentwatch.collectors.drift": {
        "BAD_STOP_REASONS", "METRIC_FAMILIES", "STOP_REASON_CATEGORIES", "VERDICTS",
        "DriftReport", "DriftSettings", "EvidenceKind", "Floors", "Guards", "MetricDrift", "RunColumns", "RunRecord",
        "SequentialMonitor", "Verdict", "columns_from_records", "compare", "reason_log_evalues",
        "stop_reason_log_evalue", "traffic_share_log_evalue", "worst",
    },
    "agentwatch.collectors.cli": set(),
    "agentwatch.collectors.config": set(),
    "agentwatch.collectors.control": set(),
    "agentwatch.collectors.demo": set(),
    "agentwatch.collectors.ingest": set(),
    "agentwatch.collectors.metrics": {
        "CONTENT_TYPE", "INSERT_DURATION_BUCKETS", "REQUEST_BODY_BUCKETS", "RUN_COST_USD_BUCKETS",
        "RUN_DURATION_BUCKETS", "RUN_STEPS_BUCKETS", "RUN_TOOL_CALLS_BUCKETS", "CollectorMetrics", "ExposedRegistry",
        "clean_label",
    },
    "agentwatch.collectors.read": set(),
    "agentwatch.collectors.replay": set(),
    "agentwatch.collectors.service": set(),
    "agentwatch.collectors.store": set(),
    "agentwatch.dashboards": set(),
    "agentwatch.alerts": set(),
}  # fmt: skip


@pytest.mark.parametrize("module_name", _public_modules())
def test_all_is_exact(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    assert set(exported) == EXPECTED_ALL[module_name], "update EXPECTED_ALL deliberately when the public API changes"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"
    public = {n for n, v in vars(module).items() if not n.startswith("_") and not isinstance(v, type(importlib))}
    public -= {"annotations"}
    assert public <= set(exported), f"public names missing from __all__: {sorted(public - set(exported))}"
