"""Bearer tokens → tenant and scopes, loaded from a tokens file.

The tenant of every span comes from the token that sent it, never from the span (a client could
claim any tenant). Tokens are kept only as SHA-256 digests and compared in constant time; the file
may hold digests instead of plain tokens (``token_sha256``) so it need not contain secrets.

Tokens file (YAML or JSON)::

    tokens:
      - token: "change-me"              # or token_sha256: "<hex digest>"
        tenant: acme
        scopes: [ingest, read]          # metrics: GET /metrics on a non-loopback address
        name: acme-agents               # optional: who this token is in the audit trail
      - token: "oncall-secret"          # control: kill switch and approvals (no tenant: every tenant)
        scopes: [control]
      - token: "grafana-secret"         # sql: the read-only ClickHouse SQL endpoint (--sql), for Grafana
        scopes: [sql]                   # no tenant: the SQL endpoint reads every tenant's rows

A token without a tenant may only hold scopes that are not confined to one tenant (``sql``,
``metrics``), and the ``sql`` scope needs a token without a tenant: ClickHouse SQL over the store
cannot be confined to one tenant's rows (chDB sessions have no row policies), so a tenant-bound
``sql`` token would promise an isolation that does not exist. The file refuses both at load.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from agentwatch.collectors.config.settings import SettingsError, read_yaml_file


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"
    # /metrics aggregates every tenant's agent, tool and model names: a scope of its own so that a
    # scraper's token reads no spans and a tenant's read token sees no other tenant's names
    METRICS = "metrics"
    # the read-only SQL endpoint for Grafana: every tenant's rows, so only tokens without a tenant
    SQL = "sql"
    # the control plane (kill switch, approval decisions, the Alertmanager route): changes what agents
    # may do. A tenant's control token only touches its own tenant; one without a tenant, the fleet.
    CONTROL = "control"


# scopes a token without a tenant may hold (they are not confined to one tenant anyway)
TENANTLESS_SCOPES = frozenset({Scope.SQL, Scope.METRICS, Scope.CONTROL})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request. ``tenant`` is None when auth is off (spans keep their own tenant), or for a
    token without a tenant, which holds only the ``sql`` and ``metrics`` scopes."""

    tenant: str | None
    scopes: frozenset[Scope]
    # who, for the audit trail: the entry's ``name:`` or ``token:<first 8 hex digits of its digest>``
    name: str = "anonymous"


ANONYMOUS = Principal(tenant=None, scopes=frozenset(Scope))


class AuthError(Exception):
    """Raised with ``status`` 401 (no or unknown token) or 403 (token lacks the scope)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator:
    """Resolves ``Authorization: Bearer ...`` values; with no tokens configured everyone is ANONYMOUS."""

    def __init__(self, entries: dict[bytes, Principal] | None = None) -> None:
        self._entries = dict(entries or {})

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @classmethod
    def from_file(cls, path: str | Path) -> Authenticator:
        file = Path(path)
        data = read_yaml_file(file, "tokens file")
        items = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise SettingsError(f"tokens file {file} must hold a non-empty 'tokens:' list")
        entries: dict[bytes, Principal] = {}
        for index, item in enumerate(items):
            where = f"tokens file {file}, entry {index + 1}"
            if not isinstance(item, dict):
                raise SettingsError(f"{where}: must be a mapping with token, tenant and scopes")
            digest = _entry_digest(item, where)
            scopes_raw = item.get("scopes", [Scope.INGEST.value])
            if not isinstance(scopes_raw, list) or not scopes_raw:
                raise SettingsError(f"{where}: scopes must be a list of {'/'.join(Scope)}")
            try:
                scopes = frozenset(Scope(str(scope)) for scope in scopes_raw)
            except ValueError:
                raise SettingsError(f"{where}: unknown scope in {scopes_raw!r} (use {', '.join(Scope)})") from None
            tenant = _entry_tenant(item.get("tenant"), scopes, where)
            if digest in entries:
                raise SettingsError(f"{where}: duplicate token")
            name = item.get("name")
            label = name.strip() if isinstance(name, str) and name.strip() else f"token:{digest.hex()[:8]}"
            entries[digest] = Principal(tenant=tenant, scopes=scopes, name=label)
        return cls(entries)

    def authenticate(self, authorization: str | None, scope: Scope) -> Principal:
        """Map the Authorization header (or gRPC metadata) to a principal allowed ``scope``."""
        if not self._entries:
            return ANONYMOUS
        if not authorization:
            raise AuthError(401, "missing bearer token")
        kind, _, token = authorization.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise AuthError(401, "expected 'Authorization: Bearer <token>'")
        presented = _digest(token.strip())
        found: Principal | None = None
        for digest, principal in self._entries.items():
            # compare against every entry so timing does not reveal how many prefixes matched
            if hmac.compare_digest(digest, presented):
                found = principal
        if found is None:
            raise AuthError(401, "unknown token")
        if scope not in found.scopes:
            raise AuthError(403, f"token lacks the {scope.value!r} scope")
        return found

    def authenticate_any(self, authorization: str | None, scopes: tuple[Scope, ...]) -> Principal:
        """Like ``authenticate``, for a route any one of ``scopes`` may reach (403 names them all)."""
        last: AuthError | None = None
        for scope in scopes:
            try:
                return self.authenticate(authorization, scope)
            except AuthError as exc:
                if exc.status == 401:
                    raise
                last = exc
        assert last is not None
        raise AuthError(403, "token lacks the " + " or ".join(repr(scope.value) for scope in scopes) + " scope")


def _entry_tenant(tenant: object, scopes: frozenset[Scope], where: str) -> str | None:
    """The entry's tenant; None (no tenant) only for scopes that span tenants (see the module docstring)."""
    if tenant is None and scopes <= TENANTLESS_SCOPES:
        return None
    if not isinstance(tenant, str) or not tenant.strip():
        raise SettingsError(
            f"{where}: tenant must be a non-empty string (only a token whose scopes are all of "
            f"{', '.join(sorted(TENANTLESS_SCOPES))} may have none)"
        )
    if Scope.SQL in scopes:
        raise SettingsError(
            f"{where}: the sql scope reads every tenant's rows (SQL cannot be confined to one tenant), so it "
            f"needs a token without a tenant: remove 'tenant: {tenant.strip()}' or give this token other scopes"
        )
    return tenant.strip()


def _entry_digest(item: dict[object, object], where: str) -> bytes:
    token = item.get("token")
    hashed = item.get("token_sha256")
    if isinstance(token, str) and token.strip():
        return _digest(token.strip())
    if isinstance(hashed, str):
        try:
            raw = bytes.fromhex(hashed.strip())
        except ValueError:
            raw = b""
        if len(raw) == 32:
            return raw
    raise SettingsError(f"{where}: needs token (a string) or token_sha256 (64 hex digits)")
