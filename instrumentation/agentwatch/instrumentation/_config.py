"""``load_config``: the safe-by-default YAML/JSON config of the seed article, validated strictly.

The seed's config (``architecture``, ``budgets``, ``approvals.required_for``, ``logging``) loads
unchanged. Optional sections extend it: ``tools`` (allow / deny / writes patterns), extra budget
limits, ``approvals.timeout_seconds``, ``kill_switch`` (file and environment sources), content
capture in ``logging``, and ``pricing`` overrides. An unknown key or a wrong type raises
``ConfigError`` naming the dotted field, because a typo in a safety config must not pass silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from agentwatch.instrumentation._approval import ApproverLike
from agentwatch.instrumentation._budget import Budget
from agentwatch.instrumentation._gateway import CredentialsLike, ToolFunction, ToolGateway
from agentwatch.instrumentation._policy import Policy
from agentwatch.instrumentation.errors import ConfigError
from agentwatch.instrumentation.killswitch import EnvKillSwitch, FileKillSwitch, KillSwitch, KillSwitchSource
from agentwatch.instrumentation.pricing import PriceTable
from agentwatch.instrumentation.redaction import DEFAULT_MAX_LENGTH

TOOL_GATEWAY_MODES: Final = ("owned",)
RUNTIMES: Final = ("managed", "custom", "managed_or_custom")
_SECTIONS: Final = ("architecture", "budgets", "approvals", "tools", "logging", "kill_switch", "pricing", "mcp")


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """The ``logging`` section: audit log records and content capture."""

    tool_calls: bool = True
    stop_reasons: bool = True
    capture_content: bool = False
    max_content_length: int = DEFAULT_MAX_LENGTH


@dataclass(frozen=True, slots=True)
class KillSwitchSettings:
    """The ``kill_switch`` section: where operators engage it."""

    file: str | None = None
    env: str | None = None
    file_check_interval: float = 1.0

    def build(self) -> KillSwitch | None:
        sources: list[KillSwitchSource] = []
        if self.file:
            sources.append(FileKillSwitch(self.file, min_interval=self.file_check_interval))
        if self.env:
            sources.append(EnvKillSwitch(self.env))
        return KillSwitch(*sources) if sources else None


@dataclass(frozen=True, slots=True)
class AgentWatchConfig:
    """A loaded config: the budget and policy to enforce, and how to log."""

    budget: Budget
    policy: Policy
    logging: LoggingSettings
    tool_gateway: str = "owned"
    runtime: str = "managed_or_custom"
    approval_timeout: float = 300.0
    kill_switch: KillSwitchSettings = field(default_factory=KillSwitchSettings)
    pricing: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None
    mcp: Mapping[str, Any] = field(default_factory=dict)
    """The ``mcp`` section as written (``agentwatch mcp-proxy`` validates it: upstreams, listener, tokens)."""

    def gateway(
        self,
        tools: Mapping[str, ToolFunction],
        *,
        approver: ApproverLike | None = None,
        credentials: CredentialsLike | None = None,
    ) -> ToolGateway:
        """A gateway enforcing this config's policy, approval timeout and kill switch."""
        return ToolGateway(
            policy=self.policy,
            tools=tools,
            approver=approver,
            credentials=credentials,
            kill_switch=self.kill_switch.build(),
            approval_timeout=self.approval_timeout,
        )


class _Section:
    """Typed reads from one mapping, with errors naming the dotted field."""

    def __init__(self, data: object, path: str, source: str | None) -> None:
        self.path = path
        self.source = source
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path or "(top level)", f"must be a mapping, got {_kind(data)}", source=source)
        self.data: Mapping[str, Any] = data

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def reject_unknown(self, known: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in known:
                raise ConfigError(
                    self.field(str(key)), f"unknown field; expected one of: {', '.join(known)}", source=self.source
                )

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.field(key), problem, source=self.source)

    def get(self, key: str, check: Callable[[Any], bool], expected: str, default: Any) -> Any:
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if not check(value):
            raise self.error(key, f"must be {expected}, got {_kind(value)} {value!r}")
        return value

    def positive_int(self, key: str) -> int | None:
        value: int | None = self.get(
            key, lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer", None
        )
        return value

    def positive_number(self, key: str, default: float | None = None) -> float | None:
        value = self.get(
            key,
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
            "a positive number",
            default,
        )
        return None if value is None else float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value: bool = self.get(key, lambda v: isinstance(v, bool), "true or false", default)
        return value

    def string(self, key: str, default: str | None = None, *, choices: tuple[str, ...] = ()) -> str | None:
        value: str | None = self.get(
            key, lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string", default
        )
        if choices and value is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def names(self, key: str) -> list[str]:
        value = self.get(key, lambda v: isinstance(v, list), "a list of tool names", [])
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(
                    f"{self.field(key)}[{index}]", f"must be a non-empty string, got {item!r}", source=self.source
                )
        return list(value)

    def section(self, key: str) -> _Section:
        return _Section(self.data.get(key), self.field(key), self.source)


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _read(path: Path) -> object:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("(file)", "file not found", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("(file)", f"cannot be read: {exc}", source=source) from exc
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "(file)", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", source=source
            ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("(file)", f"invalid YAML{where}: {problem}", source=source) from exc


def load_config(path_or_mapping: str | os.PathLike[str] | Mapping[str, Any]) -> AgentWatchConfig:
    """Load and validate a config from a YAML/JSON file or an already-parsed mapping."""
    if isinstance(path_or_mapping, Mapping):
        data: object = path_or_mapping
        source = None
    else:
        path = Path(path_or_mapping)
        source = str(path)
        data = _read(path)
    root = _Section(data, "", source)
    root.reject_unknown(_SECTIONS)

    architecture = root.section("architecture")
    architecture.reject_unknown(("tool_gateway", "runtime"))
    tool_gateway = architecture.string("tool_gateway", "owned", choices=TOOL_GATEWAY_MODES) or "owned"
    runtime = architecture.string("runtime", "managed_or_custom", choices=RUNTIMES) or "managed_or_custom"

    budgets = root.section("budgets")
    budgets.reject_unknown(
        ("max_steps", "max_tool_calls", "max_seconds", "max_usd", "allow_unpriced", "allow_unpriced_models")
    )
    budget = Budget(
        max_steps=budgets.positive_int("max_steps"),
        max_tool_calls=budgets.positive_int("max_tool_calls"),
        max_seconds=budgets.positive_number("max_seconds"),
        max_usd=budgets.positive_number("max_usd"),
        allow_unpriced=budgets.boolean("allow_unpriced", False),
        allow_unpriced_models=tuple(budgets.names("allow_unpriced_models")),
    )

    approvals = root.section("approvals")
    approvals.reject_unknown(("required_for", "timeout_seconds"))
    tools = root.section("tools")
    tools.reject_unknown(("allow", "deny", "writes"))
    policy = Policy(
        allow=tools.names("allow"),
        require_approval=approvals.names("required_for"),
        deny=tools.names("deny"),
        writes=tools.names("writes"),
    )

    logging_section = root.section("logging")
    logging_section.reject_unknown(("tool_calls", "stop_reasons", "capture_content", "max_content_length"))
    logging_settings = LoggingSettings(
        tool_calls=logging_section.boolean("tool_calls", True),
        stop_reasons=logging_section.boolean("stop_reasons", True),
        capture_content=logging_section.boolean("capture_content", False),
        max_content_length=logging_section.positive_int("max_content_length") or DEFAULT_MAX_LENGTH,
    )

    kill = root.section("kill_switch")
    kill.reject_unknown(("file", "env", "file_check_interval"))
    kill_switch = KillSwitchSettings(
        file=kill.string("file"),
        env=kill.string("env"),
        file_check_interval=kill.positive_number("file_check_interval", 1.0) or 1.0,
    )

    pricing = root.section("pricing")
    prices: dict[str, Mapping[str, Any]] = {}
    for model in pricing.data:
        entry = pricing.section(str(model))
        entry.reject_unknown(("input", "output", "cached_input", "provider"))
        prices[str(model)] = dict(entry.data)
    if prices:
        PriceTable.default().with_overrides(prices)  # validates now, so a bad price fails at load time

    return AgentWatchConfig(
        budget=budget,
        policy=policy,
        logging=logging_settings,
        tool_gateway=tool_gateway,
        runtime=runtime,
        approval_timeout=approvals.positive_number("timeout_seconds", 300.0) or 300.0,
        kill_switch=kill_switch,
        pricing=prices,
        source=source,
        mcp=dict(root.section("mcp").data),
    )
