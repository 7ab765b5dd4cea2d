"""The control API (``/api/v1/control/...``) on the collector's OTLP/HTTP listener.

    GET    /api/v1/control/killswitch?wait=SECONDS   ingest|read|control   scopes the token's tenant is under
    POST   /api/v1/control/killswitch                control               engage {agent, tenant, all, scope,
                                                                           reason, expires_in_seconds, by}
    DELETE /api/v1/control/killswitch                control               release (same body, or ?scope=)
    GET    /api/v1/control/approvals?status=&limit=  read|control          approvals, newest first
    POST   /api/v1/control/approvals                 ingest                file one {agent, tool, arguments,
                                                                           rule, run_id, call_id, webhook}
    GET    /api/v1/control/approvals/{id}?wait=S     ingest|read|control   one approval; waits while it is pending
    POST   /api/v1/control/approvals/{id}/approve    control               {reason, by}; .../reject likewise
    GET    /api/v1/control/audit?since=&until=&agent=&tenant=&kind=&limit=   read|control
    POST   /api/v1/control/alertmanager              control               Alertmanager webhook receiver

The kill-switch read carries an ``ETag`` (over the active scopes); ``If-None-Match`` with the current
one answers 304, after waiting up to ``wait`` seconds (at most 30) for a change: a change made through
this collector wakes the wait at once, one made through another replica within the state's refresh
interval. A tenant's token only ever reads or changes its own tenant (anything else is a 403; another
tenant's approval is a 404, like an unknown one); a token without a tenant (``control`` may have none)
acts on the fleet. Every change writes an ``agent_audit`` row with who made it: the token's ``name``
(or ``token:<digest prefix>``), plus the ``by`` the client claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from agentwatch.collectors.config.auth import Authenticator, AuthError, Principal, Scope
from agentwatch.collectors.control.alertmanager import kill_orders
from agentwatch.collectors.control.audit import audit_entries
from agentwatch.collectors.control.notify import WebhookNotifier
from agentwatch.collectors.control.state import APPROVED, PENDING, REJECTED, Conflict, ControlPlane
from agentwatch.collectors.read.filters import InvalidQuery, parse_limit, parse_since
from agentwatch.collectors.store.clickhouse import StoreError, StoreUnavailable
from agentwatch.instrumentation.killswitch import parse_scope, scope_for, scope_parts
from agentwatch.instrumentation.redaction import Redactor

log = logging.getLogger("agentwatch.collector.control")

PREFIX: Final = "/api/v1/control"
MAX_WAIT_S: Final = 30.0
_TICK_S: Final = 0.5  # how often a long-poll looks at the (cached) store state for other replicas' changes
_MAX_BODY: Final = 1 << 20


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Changes:
    """Wakes long-polls when this process changes the control state (asyncio, on the server's loop)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self, timeout_s: float) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(timeout_s, 0.0))


def _wait_param(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise InvalidQuery(f"wait must be seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidQuery(f"wait must be seconds >= 0, got {raw!r}")
    return min(value, MAX_WAIT_S)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise _HttpError(413, "body too large")
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw)
    except ValueError:
        raise InvalidQuery("the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidQuery("the body must be a JSON object")
    return document


def _text(document: dict[str, Any], key: str, *, default: str = "", limit: int = 2000) -> str:
    value = document.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidQuery(f"{key} must be a string")
    return value[:limit]


def actor_of(principal: Principal, claimed: str) -> str:
    """Who made a change: the token's identity, and the name the client gives (unverified) if any."""
    return f"{claimed} via {principal.name}" if claimed and claimed != principal.name else principal.name


def confine(principal: Principal, scope: str) -> None:
    """A tenant's token may only change scopes of its own tenant."""
    if principal.tenant is None:
        return
    _, tenant = scope_parts(scope)
    if tenant != principal.tenant:
        raise _HttpError(
            403, f"this token may only change scopes of tenant {principal.tenant!r} (give --tenant {principal.tenant})"
        )


def scope_from(document: dict[str, Any], query: dict[str, str]) -> str:
    """The scope a request names: ``scope``, or ``all``, or ``agent`` and/or ``tenant``."""
    scope = query.get("scope") or document.get("scope")
    agent = query.get("agent") or document.get("agent")
    tenant = query.get("tenant") or document.get("tenant")
    everything = document.get("all") is True or query.get("all") in ("1", "true")
    try:
        if scope:
            return parse_scope(str(scope))
        if everything:
            if agent or tenant:
                raise InvalidQuery("all excludes agent and tenant")
            return "*"
        if not agent and not tenant:
            raise InvalidQuery("name agent and/or tenant, or all=true, or a scope")
        return scope_for(str(agent) if agent else None, str(tenant) if tenant else None)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None


def _expiry(document: dict[str, Any]) -> datetime | None:
    value = document.get("expires_in_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidQuery("expires_in_seconds must be a positive number")
    return datetime.now(UTC) + timedelta(seconds=float(value))


Handler = Callable[[Request, Principal], Awaitable[Response]]


def control_routes(  # noqa: PLR0915 (one closure per route, as in read_api)
    *,
    control: ControlPlane,
    authenticator: Authenticator,
    is_ready: Callable[[], tuple[bool, str]],
    webhooks: tuple[str, ...] = (),
    redactor: Redactor | None = None,
) -> list[BaseRoute]:
    """The control routes; ``webhooks`` are URL prefixes an approval may ask to be notified at."""
    changes = Changes()
    notifier = WebhookNotifier(webhooks)

    def guarded(handler: Handler, *scopes: Scope) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                principal = authenticator.authenticate_any(request.headers.get("authorization"), scopes)
            except AuthError as exc:
                headers = {"WWW-Authenticate": 'Bearer realm="agentwatch"'} if exc.status == 401 else None
                return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
            ready, reason = is_ready()
            if not ready:
                return JSONResponse({"error": f"store not ready: {reason}"}, 503, headers={"Retry-After": "1"})
            try:
                return await handler(request, principal)
            except InvalidQuery as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except _HttpError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            except StoreUnavailable as exc:
                log.warning("control API: %s %s: %s", request.method, request.url.path, exc)
                return JSONResponse({"error": "store unavailable, retry later"}, 503, headers={"Retry-After": "1"})
            except StoreError:
                log.exception("control API: %s %s failed", request.method, request.url.path)
                return JSONResponse({"error": "internal error in the store"}, status_code=500)

        return endpoint

    async def switch_get(request: Request, principal: Principal) -> Response:
        wait = _wait_param(request)
        known = request.headers.get("if-none-match")
        deadline = time.monotonic() + wait
        while True:
            view = await run_in_threadpool(control.switch_view, principal.tenant)
            remaining = deadline - time.monotonic()
            if view.etag != known:
                return JSONResponse(view.to_dict(), headers={"ETag": view.etag, "Cache-Control": "no-cache"})
            if remaining <= 0:
                return Response(status_code=304, headers={"ETag": view.etag})
            await changes.wait(min(remaining, _TICK_S))

    async def switch_change(request: Request, principal: Principal) -> Response:
        document = await _body(request)
        scope = scope_from(document, dict(request.query_params))
        confine(principal, scope)
        engage = request.method == "POST"
        reason = _text(document, "reason")
        if engage and not reason.strip():
            raise InvalidQuery("a reason is required to engage the kill switch")
        entry = await run_in_threadpool(
            lambda: control.set_switch(
                scope,
                engaged=engage,
                actor=actor_of(principal, _text(document, "by", limit=200)),
                reason=reason,
                expires_at=_expiry(document) if engage else None,
            )
        )
        changes.notify()
        return JSONResponse({"entry": entry.to_dict()})

    async def approvals_list(request: Request, principal: Principal) -> Response:
        status = request.query_params.get("status")
        if status not in (None, PENDING, APPROVED, REJECTED):
            raise InvalidQuery("status must be pending, approved or rejected")
        limit = parse_limit(request.query_params.get("limit", "100"))
        found = await run_in_threadpool(lambda: control.approvals(principal.tenant, status=status, limit=limit))
        return JSONResponse({"approvals": [a.to_dict() for a in found]})

    async def approval_file(request: Request, principal: Principal) -> Response:
        document = await _body(request)
        agent, tool = _text(document, "agent", limit=256), _text(document, "tool", limit=256)
        if not agent or not tool:
            raise InvalidQuery("agent and tool are required")
        webhook = _text(document, "webhook", limit=2000)
        if webhook and not notifier.allowed(webhook):
            raise _HttpError(403, "webhook not allowed: list its URL prefix in the collector's approval_webhooks")
        arguments = document.get("arguments", {})
        if redactor is not None:
            arguments = redactor.redact_value(arguments)
        tenant = principal.tenant if principal.tenant is not None else _text(document, "tenant", limit=256)
        approval = await run_in_threadpool(
            lambda: control.file_approval(
                tenant=tenant,
                agent=agent,
                tool=tool,
                arguments=json.dumps(arguments, default=str),
                rule=_text(document, "rule", limit=256),
                requested_by=actor_of(principal, _text(document, "by", limit=200)),
                run_id=_text(document, "run_id", limit=64),
                call_id=_text(document, "call_id", limit=256),
            )
        )
        if webhook:
            base = str(request.base_url).rstrip("/") + f"{PREFIX}/approvals/{approval.approval_id}"
            notifier.send(webhook, approval.to_dict(), approve_url=f"{base}/approve", reject_url=f"{base}/reject")
        return JSONResponse({"approval": approval.to_dict()}, status_code=201)

    async def approval_get(request: Request, principal: Principal) -> Response:
        wait = _wait_param(request)
        deadline = time.monotonic() + wait
        approval_id = request.path_params["approval_id"]
        while True:
            found = await run_in_threadpool(control.approval, approval_id, principal.tenant)
            if found is None:
                raise _HttpError(404, "no such approval")
            remaining = deadline - time.monotonic()
            if found.status != PENDING or remaining <= 0:
                # the decision token goes to the agent that asked (an ingest token), not to readers
                with_token = Scope.INGEST in principal.scopes
                return JSONResponse({"approval": found.to_dict(with_token=with_token)})
            await changes.wait(min(remaining, _TICK_S))

    async def approval_decide(request: Request, principal: Principal) -> Response:
        if request.path_params["decision"] not in ("approve", "reject"):
            raise _HttpError(404, "not found: POST .../approve or .../reject")
        document = await _body(request)
        approved = request.path_params["decision"] == "approve"
        approval_id = request.path_params["approval_id"]
        try:
            decided = await run_in_threadpool(
                lambda: control.decide(
                    approval_id,
                    principal.tenant,
                    approved=approved,
                    actor=actor_of(principal, _text(document, "by", limit=200)),
                    reason=_text(document, "reason"),
                )
            )
        except KeyError:
            raise _HttpError(404, "no such approval") from None
        except Conflict as exc:
            raise _HttpError(409, str(exc)) from None
        changes.notify()
        return JSONResponse({"approval": decided.to_dict()})

    async def audit(request: Request, principal: Principal) -> Response:
        params = dict(request.query_params)
        unknown = set(params) - {"since", "until", "agent", "tenant", "kind", "limit"}
        if unknown:
            raise InvalidQuery(f"unknown parameter {sorted(unknown)[0]!r}")
        tenant = params.get("tenant")
        if principal.tenant is not None:
            if tenant is not None and tenant != principal.tenant:
                raise _HttpError(403, "this token may only read its own tenant")
            tenant = principal.tenant
        rows = await run_in_threadpool(
            lambda: audit_entries(
                control.store,
                tenant,
                since=parse_since(params["since"]) if "since" in params else None,
                until=parse_since(params["until"]) if "until" in params else None,
                agent=params.get("agent"),
                kind=params.get("kind"),
                limit=parse_limit(params.get("limit", "200")),
            )
        )
        return JSONResponse({"audit": rows})

    async def alertmanager(request: Request, principal: Principal) -> Response:
        orders = kill_orders(await _body(request), tenant=principal.tenant)
        engaged = []
        for order in orders:
            entry = await run_in_threadpool(
                functools.partial(
                    control.set_switch,
                    order.scope,
                    engaged=True,
                    actor=f"alertmanager:{order.alert} via {principal.name}",
                    reason=order.reason,
                    expires_at=datetime.now(UTC) + timedelta(seconds=order.expires_in_s),
                )
            )
            engaged.append(entry.to_dict())
        if engaged:
            changes.notify()
        return JSONResponse({"engaged": engaged})

    read_any = (Scope.INGEST, Scope.READ, Scope.CONTROL)
    return [
        Route(f"{PREFIX}/killswitch", guarded(switch_get, *read_any), methods=["GET"]),
        Route(f"{PREFIX}/killswitch", guarded(switch_change, Scope.CONTROL), methods=["POST", "DELETE"]),
        Route(f"{PREFIX}/approvals", guarded(approvals_list, Scope.READ, Scope.CONTROL), methods=["GET"]),
        Route(f"{PREFIX}/approvals", guarded(approval_file, Scope.INGEST), methods=["POST"]),
        Route(f"{PREFIX}/approvals/{{approval_id}}", guarded(approval_get, *read_any), methods=["GET"]),
        Route(
            f"{PREFIX}/approvals/{{approval_id}}/{{decision:str}}",
            guarded(approval_decide, Scope.CONTROL),
            methods=["POST"],
        ),
        Route(f"{PREFIX}/audit", guarded(audit, Scope.READ, Scope.CONTROL), methods=["GET"]),
        Route(f"{PREFIX}/alertmanager", guarded(alertmanager, Scope.CONTROL), methods=["POST"]),
    ]


__all__ = ["MAX_WAIT_S", "PREFIX", "Changes", "actor_of", "confine", "control_routes", "scope_from"]
