"""Collector settings: one dataclass filled from defaults, a YAML file, ``AGENTWATCH_*`` env and flags.

Precedence is flags > environment > file > defaults, as in most OTel Collector distributions. Every
setting has the same name in all three places: ``max_body_bytes`` in YAML,
``AGENTWATCH_MAX_BODY_BYTES`` in the environment, ``--max-body-bytes`` on the command line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "AGENTWATCH_"
DEFAULT_CLICKHOUSE = "chdb://./agentwatch-data"


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe; the message names the setting and the fix."""


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """Everything ``agentwatch collector`` can be told. Addresses are ``HOST:PORT``; an empty one is off."""

    clickhouse: str = DEFAULT_CLICKHOUSE
    database: str = ""  # empty: the database named in the clickhouse URL ("default" if none)
    cluster: str = ""
    otlp_http: str = "127.0.0.1:4318"
    otlp_grpc: str = "127.0.0.1:4317"
    metrics: str = "127.0.0.1:9464"
    sql: str = ""  # read-only ClickHouse HTTP interface over an embedded store, for Grafana (off when empty)
    sql_max_execution_seconds: float = 30.0
    sql_max_memory_bytes: int = 1 << 30
    sql_max_result_rows: int = 100_000
    sql_max_result_bytes: int = 128 << 20
    spool: str = "./agentwatch-spool"
    spool_max_bytes: int = 1 << 30
    tokens: str = ""
    insecure_allow_remote: bool = False
    header_timeout_seconds: float = 10.0  # connection opened (kept alive: next request's 1st byte) -> full head
    body_timeout_seconds: float = 30.0  # from a request's head to the last byte of its body
    max_body_bytes: int = 64 << 20
    max_spans_per_request: int = 50_000
    max_attribute_length: int = 16_384
    max_attribute_key_length: int = 256
    max_attributes_per_span: int = 256
    max_concurrent_decodes: int = 4
    decode_timeout_seconds: float = 10.0
    max_inflight_bytes: int = 256 << 20
    batch_max_spans: int = 50_000
    batch_max_bytes: int = 64 << 20
    batch_timeout_seconds: float = 0.5
    retry_after_seconds: int = 5
    traces_ttl_days: int = 30
    runs_ttl_days: int = 400
    max_tools_per_agent: int = 50
    max_models_per_agent: int = 20
    redact: bool = True
    dialects: bool = True  # read runs, LLM and tool calls from other GenAI instrumentations' spans
    dialect_trace_idle_seconds: float = 300.0  # a foreign trace whose root has not arrived by then is dropped
    pricing_file: str = ""  # JSON price list overriding the shipped one, for the costs of foreign runs
    drift_enabled: bool = True
    drift_interval_seconds: float = 60.0
    drift_window: str = "7d"  # how far back a canary's runs are looked for
    drift_since: str = ""  # empty: each canary's window starts at its first run
    drift_alpha: float = 0.05
    drift_canary_share: str = ""  # "0.1" for every agent, or "support=0.1,billing=0.25"
    drift_max_runs: int = 100_000
    # URL prefixes (comma-separated) an approval may ask the collector to notify; empty: none
    approval_webhooks: str = ""

    def validate(self) -> CollectorSettings:
        """Check ranges and addresses; returns self so construction reads as one expression."""
        for name in ("otlp_http", "otlp_grpc", "metrics", "sql"):
            value = getattr(self, name)
            if value:
                parse_address(value, setting=name)
        if self.sql and not self.clickhouse.startswith("chdb://"):
            raise SettingsError(
                "sql serves the embedded store (chdb://) only: with a ClickHouse server, point Grafana at the "
                "server itself with a read-only user"
            )
        if not self.otlp_http:
            raise SettingsError("otlp_http cannot be empty: it also serves /healthz, /readyz and the read API")
        positive = (
            "spool_max_bytes",
            "max_body_bytes",
            "max_spans_per_request",
            "max_attribute_length",
            "max_attribute_key_length",
            "max_attributes_per_span",
            "max_concurrent_decodes",
            "max_inflight_bytes",
            "batch_max_spans",
            "batch_max_bytes",
            "retry_after_seconds",
            "max_tools_per_agent",
            "max_models_per_agent",
            "drift_max_runs",
            "sql_max_memory_bytes",
            "sql_max_result_rows",
            "sql_max_result_bytes",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in (
            "batch_timeout_seconds",
            "decode_timeout_seconds",
            "header_timeout_seconds",
            "body_timeout_seconds",
            "sql_max_execution_seconds",
            "dialect_trace_idle_seconds",
        ):
            if not 0 < getattr(self, name) < math.inf:  # also refuses NaN, which compares false
                raise SettingsError(f"{name} must be positive and finite, got {getattr(self, name)!r}")
        self._validate_drift()
        if self.pricing_file:
            from agentwatch.instrumentation.errors import ConfigError
            from agentwatch.instrumentation.pricing import load_price_file

            try:
                load_price_file(self.pricing_file)
            except ConfigError as exc:
                raise SettingsError(f"pricing_file: {exc}") from None
        if self.traces_ttl_days < 0 or self.runs_ttl_days < 0:
            raise SettingsError("TTLs are days >= 0 (0 keeps data forever)")
        if not (self.clickhouse.startswith(("chdb://", "http://", "https://"))):
            raise SettingsError(f"clickhouse must be chdb://PATH or http(s)://host:port/db, got {self.clickhouse!r}")
        if self.database and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.database):
            raise SettingsError(f"database must be letters, digits and _ only, got {self.database!r}")
        from agentwatch.collectors.store.clickhouse import parse_url

        try:
            parse_url(self.clickhouse)  # its messages never include the password
        except ValueError as exc:
            raise SettingsError(f"clickhouse: {exc}") from None
        return self

    def _validate_drift(self) -> None:
        if not 0 < self.drift_interval_seconds < math.inf:
            raise SettingsError(
                f"drift_interval_seconds must be positive and finite, got {self.drift_interval_seconds!r}"
            )
        if not 0 < self.drift_alpha < 0.5:
            raise SettingsError(f"drift_alpha must be between 0 and 0.5 (e.g. 0.05), got {self.drift_alpha!r}")
        parse_duration(self.drift_window, setting="drift_window")
        parse_canary_shares(self.drift_canary_share)
        if self.drift_since:
            from agentwatch.collectors.read.filters import InvalidQuery, parse_since

            try:
                parse_since(self.drift_since)
            except InvalidQuery as exc:
                raise SettingsError(f"drift_since: {exc}") from None

    def check_exposure(self) -> None:
        """Refuse to listen beyond loopback without auth unless explicitly allowed (the safe default).

        /metrics counts too: it names every tenant's agents, tools and models. With tokens, a
        non-loopback /metrics asks for a token with the ``metrics`` scope (the service enforces it).
        The SQL listener too (it reads every tenant's spans); with tokens it asks for the ``sql`` scope.
        """
        if self.tokens or self.insecure_allow_remote:
            return
        for name in ("otlp_http", "otlp_grpc", "metrics", "sql"):
            value = getattr(self, name)
            if value and not is_loopback(parse_address(value, setting=name)[0]):
                raise SettingsError(
                    f"{name}={value} listens beyond loopback without authentication: give --tokens FILE "
                    "(token -> tenant and scopes) or pass --insecure-allow-remote to accept unauthenticated traffic"
                )


SETTING_TYPES: dict[str, type] = {
    field.name: type(field.default) for field in fields(CollectorSettings) if field.default is not dataclasses.MISSING
}


def parse_address(value: str, *, setting: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); port 0 asks the OS for a free one."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise SettingsError(f"{setting} must be HOST:PORT, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise SettingsError(f"{setting}: port {port} is out of range")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: str, *, setting: str) -> float:
    """``30s``, ``15m``, ``24h``, ``7d``, ``2w`` → seconds (> 0)."""
    match = _DURATION.match(value)
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)] if match else 0.0
    if not 0 < seconds < math.inf:
        raise SettingsError(f"{setting} must be a positive duration like 15m, 24h or 7d, got {value!r}")
    return seconds


def parse_canary_shares(value: str) -> dict[str, float]:
    """``drift_canary_share``: ``0.1`` (every agent) and/or ``agent=0.1`` pairs, comma-separated.

    The result maps agent names to the share of traffic the canary receives; ``""`` holds the
    share for every agent not named. Each share is strictly between 0 and 1.
    """
    shares: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        agent, sep, number = item.rpartition("=")
        agent = agent.strip() if sep else ""
        if sep and not agent:
            raise SettingsError(f"drift_canary_share: {item!r} names no agent (use AGENT=SHARE)")
        try:
            share = float(number)
        except ValueError:
            share = math.nan
        if not 0 < share < 1:
            raise SettingsError(
                f"drift_canary_share: {item!r} must be a share between 0 and 1 exclusive, "
                "e.g. 0.1 or support=0.1,billing=0.25"
            )
        if agent in shares:
            raise SettingsError(f"drift_canary_share: {agent or 'the default share'} is given twice")
        shares[agent] = share
    return shares


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _coerce(name: str, value: Any, *, source: str) -> Any:
    expected = SETTING_TYPES[name]
    try:
        if expected is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(value)
        if expected is int:
            # int(1.5) would silently give 1 and int(True) 1: a wrong type, not a number to round
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if expected is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if value is None:
            return ""
        if not isinstance(value, str | int | float):
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{source}: {name} must be a {expected.__name__}, got {value!r}") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line (PyYAML's own text spans several, with a caret drawing)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split())


def read_yaml_file(path: str | Path, what: str) -> Any:
    """Parse a YAML (or JSON) file; every way it can fail is one ``SettingsError`` line naming ``what``."""
    file = Path(path)
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read {what} {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{what} {file} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{what} {file} is not valid YAML: {yaml_problem(exc)}") from None


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML settings file; a top-level ``collector:`` section is accepted too."""
    file = Path(path)
    data = read_yaml_file(file, "config file")
    if data is None:
        return {}
    if isinstance(data, Mapping) and isinstance(data.get("collector"), Mapping):
        data = data["collector"]
    if not isinstance(data, Mapping):
        raise SettingsError(f"config file {file} must hold a mapping of settings")
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in SETTING_TYPES:
            raise SettingsError(
                f"config file {file}: unknown setting {key!r} (known: {', '.join(sorted(SETTING_TYPES))})"
            )
        result[name] = _coerce(name, value, source=str(file))
    return result


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in SETTING_TYPES:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            result[name] = _coerce(name, environ[key], source=f"environment {key}")
    return result


def resolve(
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> CollectorSettings:
    """Merge file < environment < overrides (flags) over the defaults and validate the result."""
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(load_file(config_file))
    merged.update(from_environment(os.environ if environ is None else environ))
    for name, value in (overrides or {}).items():
        if value is not None:
            merged[name] = _coerce(name, value, source=f"--{name.replace('_', '-')}")
    return CollectorSettings(**merged).validate()
