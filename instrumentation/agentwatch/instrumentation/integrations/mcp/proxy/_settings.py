"""The ``mcp`` section of the agentwatch config: what ``agentwatch mcp-proxy`` fronts and how it listens.

```yaml
mcp:
  agent: mcp-proxy            # agent name of the runs (one run per client session)
  on_denied: refuse           # refuse (an MCP error result) | stop (the session's run stops)
  hide_denied: false          # leave denied tools out of tools/list
  listen: {transport: http, host: 127.0.0.1, port: 8765, path: /mcp}   # or {transport: stdio, tenant: acme}
  tokens: {tok-acme: acme, tok-globex: globex}   # bearer token -> tenant (required beyond loopback)
  control:                    # the collector's control plane: its kill switch and approvals
    url: http://127.0.0.1:4318
    tenant_tokens: {acme: ${ACME_INGEST_TOKEN}}  # per tenant: reads its kill switch, files its approvals
    token: ${AGENTWATCH_TOKEN}                   # optional: for tenants without one
  upstreams:
    helpdesk:
      url: http://127.0.0.1:9000/mcp             # Streamable HTTP ...
      headers: {X-Team: support}
      credentials:                               # per tenant: HTTP headers (url) or env (command)
        acme: {Authorization: Bearer upstream-acme}
    files:
      command: python                            # ... or stdio
      args: [server.py]
      env: {}
```

Values may name environment variables as ``${NAME}`` (tokens and credentials should).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from agentwatch.instrumentation._config import AgentWatchConfig, _Section
from agentwatch.instrumentation.errors import ConfigError
from agentwatch.instrumentation.integrations.mcp._core import OnDenied, server_label

_ENV_REFERENCE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream MCP server: a command (stdio) or a URL (Streamable HTTP)."""

    name: str
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """tenant -> headers (url) or environment (command); never put on a span."""

    @property
    def transport(self) -> str:
        return "tcp" if self.url else "pipe"


@dataclass(frozen=True, slots=True)
class Listen:
    transport: Literal["http", "stdio"] = "http"
    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/mcp"
    tenant: str | None = None
    """stdio: the tenant of the one session (there is no token to map)."""


@dataclass(frozen=True, slots=True)
class Control:
    """The collector's control plane: ``RemoteKillSwitch`` beside the config's sources, ``RemoteApprover``."""

    url: str
    token: str | None = None
    tenant_tokens: Mapping[str, str] = field(default_factory=dict)
    kill_switch: bool = True
    approvals: bool = True

    def token_for(self, tenant: str | None) -> str | None:
        return self.tenant_tokens.get(tenant or "", self.token)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    upstreams: tuple[Upstream, ...]
    listen: Listen = field(default_factory=Listen)
    tokens: Mapping[str, str] = field(default_factory=dict)
    agent: str = "mcp-proxy"
    on_denied: OnDenied = "refuse"
    hide_denied: bool = False
    allow_unauthenticated: bool = False
    control: Control | None = None

    def upstream(self, name: str) -> Upstream | None:
        return next((upstream for upstream in self.upstreams if upstream.name == name), None)


def _expand(value: str, where: str, source: str | None) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(where, f"environment variable {name} is not set", source=source)
        return os.environ[name]

    return _ENV_REFERENCE.sub(replace, value)


def _strings(section: _Section, key: str) -> dict[str, str]:
    mapping = section.section(key)
    result: dict[str, str] = {}
    for name, value in mapping.data.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise mapping.error(str(name), f"must be a string, got {type(value).__name__}")
        result[str(name)] = _expand(str(value), mapping.field(str(name)), section.source)
    return result


def _upstream(section: _Section, name: str) -> Upstream:
    section.reject_unknown(("url", "command", "args", "env", "headers", "credentials"))
    url, command = section.string("url"), section.string("command")
    if (url is None) == (command is None):
        raise section.error("url", "give exactly one of url (Streamable HTTP) or command (stdio)")
    if server_label(name) != name:
        raise ConfigError(
            section.path, "upstream names may only use letters, digits, '_' and '-'", source=section.source
        )
    args = section.get("args", lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v), "a list", [])
    credentials_section = section.section("credentials")
    credentials = {str(tenant): _strings(credentials_section, str(tenant)) for tenant in credentials_section.data}
    return Upstream(
        name=name,
        url=url,
        command=command,
        args=tuple(args),
        env=_strings(section, "env"),
        headers=_strings(section, "headers"),
        credentials=credentials,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxy_settings(config: AgentWatchConfig) -> ProxySettings:
    """Validate the config's ``mcp`` section; errors name the dotted field."""
    root = _Section(config.mcp, "mcp", config.source)
    root.reject_unknown(
        ("agent", "on_denied", "hide_denied", "listen", "tokens", "upstreams", "allow_unauthenticated", "control")
    )
    upstreams_section = root.section("upstreams")
    if not upstreams_section.data:
        raise root.error("upstreams", "list at least one upstream MCP server")
    upstreams = tuple(_upstream(upstreams_section.section(str(n)), str(n)) for n in upstreams_section.data)
    listen_section = root.section("listen")
    listen_section.reject_unknown(("transport", "host", "port", "path", "tenant"))
    transport = listen_section.string("transport", "http", choices=("http", "stdio")) or "http"
    port = listen_section.get("port", lambda v: isinstance(v, int) and 0 <= v < 65536, "a port number", 8765)
    listen = Listen(
        transport="stdio" if transport == "stdio" else "http",
        host=listen_section.string("host", "127.0.0.1") or "127.0.0.1",
        port=port,
        path=listen_section.string("path", "/mcp") or "/mcp",
        tenant=listen_section.string("tenant"),
    )
    tokens = _strings(root, "tokens")
    allow_unauthenticated = root.boolean("allow_unauthenticated", False)
    if listen.transport == "http" and not tokens and not _is_loopback(listen.host) and not allow_unauthenticated:
        raise root.error(
            "tokens", f"listening on {listen.host} beyond loopback needs tokens (or allow_unauthenticated)"
        )
    on_denied = root.string("on_denied", "refuse", choices=("refuse", "stop")) or "refuse"
    return ProxySettings(
        upstreams=upstreams,
        listen=listen,
        tokens=tokens,
        agent=root.string("agent", "mcp-proxy") or "mcp-proxy",
        on_denied="stop" if on_denied == "stop" else "refuse",
        hide_denied=root.boolean("hide_denied", False),
        allow_unauthenticated=allow_unauthenticated,
        control=_control(root.section("control")),
    )


def _control(section: _Section) -> Control | None:
    if not section.data:
        return None
    section.reject_unknown(("url", "token", "tenant_tokens", "kill_switch", "approvals"))
    url = section.string("url")
    if url is None:
        raise section.error("url", "the collector's URL is required (http://host:4318)")
    token = section.string("token")
    return Control(
        url=url,
        token=_expand(token, section.field("token"), section.source) if token else None,
        tenant_tokens=_strings(section, "tenant_tokens"),
        kill_switch=section.boolean("kill_switch", True),
        approvals=section.boolean("approvals", True),
    )
