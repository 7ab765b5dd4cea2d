"""The collector's read API (``/api/v1/...``): runs, one run, its trace tree and fleet statistics as JSON.

Mounted on the OTLP/HTTP listener. Every request needs a token with the ``read`` scope when auth is
on, and a token's tenant always confines the query: a tenant never sees another tenant's runs, not
even by guessing a run id (that answers 404, exactly like an unknown run). Store calls block, so
they run in the thread pool; a store that is not ready answers 503 with the reason.

    GET /api/v1/runs?agent=&track=&stop_reason=&tenant=&since=&until=&limit=   → {"runs": [...]}
    GET /api/v1/runs/{run_id}                                                  → {"run": {...}}
    GET /api/v1/runs/{run_id}/trace?tenant=&content=                           → {"trace": {...}}
    GET /api/v1/traces/{trace_id}?tenant=&content=                             → {"trace": {...}}
    GET /api/v1/stats?since=&until=&agent=&track=&tenant=                      → {"stats": {...}}
    GET /api/v1/recordings?agent=&track=&tenant=&since=&until=&limit=&run_ids= → {"recordings": [...]}
    GET /api/v1/drift?agent=&since=&until=&mode=&alpha=&canary_share=&tenant=  → {"drift": {...}}
    GET|POST /api/v1/drift/gate?agent=...&on_inconclusive=pass|fail            → 200 go, 412 halt

The trace routes answer any stored trace as a tree: ``/runs/{id}/trace`` takes a run id or, when the
id is no run's, a trace id (32 hex digits); ``/traces/{trace_id}`` takes a trace id only. A tenant
token reads only its tenant's spans (another tenant's trace is a 404). ``content=true`` adds each
span's captured content (inputs, outputs, tool arguments and results, redacted at ingest); the
trace's ``run`` is null when the trace holds no agentwatch run.

The drift report always answers 200 (Argo Rollouts' Web provider reads ``$.drift.verdict``); the gate
answers 200 when the canary may go on and 412 when it must halt (Flagger webhooks; a POST body's
``metadata`` may carry the parameters instead of the query string).

Errors are ``{"error": message}`` with 400 (bad parameter), 401/403 (auth), 404 (unknown run or trace) or 503.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from agentwatch.collectors.config.auth import Authenticator, AuthError, Principal, Scope
from agentwatch.collectors.drift.analyzer import (
    DRIFT_PARAMETERS,
    AgentDrift,
    AgentNotFound,
    DriftOptions,
    analyze,
    options_from_params,
)
from agentwatch.collectors.read.filters import InvalidQuery, RunFilter, StoreReader, parse_limit, parse_since
from agentwatch.collectors.read.runs import get_run, list_runs
from agentwatch.collectors.read.stats import stats
from agentwatch.collectors.read.traces import get_trace, get_trace_by_id
from agentwatch.collectors.replay.recordings import FILTER_PARAMETERS, RecordingFilter, load_recordings
from agentwatch.collectors.store.clickhouse import StoreError, StoreUnavailable

log = logging.getLogger("agentwatch.collector.readapi")

API_PREFIX: Final = "/api/v1"
_RUNS_PARAMETERS: Final = frozenset({"agent", "track", "stop_reason", "tenant", "since", "until", "limit"})
_STATS_PARAMETERS: Final = frozenset({"agent", "track", "tenant", "since", "until"})
_TRACE_PARAMETERS: Final = frozenset({"tenant", "content"})
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})
_RETRY_AFTER_S: Final = "5"


class _HttpError(Exception):
    """Ends a request with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _single_params(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """Query parameters as one value each; unknown or repeated names are a 400 (typos must not widen a query)."""
    values: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise InvalidQuery(f"unknown parameter {name!r} (expected: {', '.join(sorted(allowed))})")
        if name in values:
            raise InvalidQuery(f"parameter {name!r} given more than once")
        values[name] = value
    return values


def _flag(name: str, value: str | None) -> bool:
    """A boolean parameter: true/1/yes or false/0/no (absent is false); anything else is a 400."""
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidQuery(f"{name} must be true or false, got {value!r}")


def _tenant_for(principal: Principal, requested: str | None) -> str | None:
    """The tenant a query is confined to: the token's tenant always wins; asking for another is a 403."""
    if principal.tenant is None:
        return requested
    if requested is not None and requested != principal.tenant:
        raise _HttpError(403, "this token may only read its own tenant")
    return principal.tenant


def _filter(params: Mapping[str, str], principal: Principal) -> RunFilter:
    since = params.get("since")
    until = params.get("until")
    limit = params.get("limit")
    return RunFilter(
        agent=params.get("agent"),
        track=params.get("track"),
        stop_reason=params.get("stop_reason"),
        tenant=_tenant_for(principal, params.get("tenant")),
        since=parse_since(since) if since is not None else None,
        until=parse_since(until) if until is not None else None,
        limit=parse_limit(limit) if limit is not None else 50,
    )


async def _webhook_metadata(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """Parameters from a webhook body's ``metadata`` (Flagger sends ``{"name", "namespace", "phase", "metadata"}``)."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidQuery("the request body must be JSON (a Flagger webhook payload)") from None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidQuery("metadata must be an object of parameters")
    unknown = sorted(set(metadata) - allowed)
    if unknown:
        raise InvalidQuery(f"unknown parameter {unknown[0]!r} in metadata (expected: {', '.join(sorted(allowed))})")
    return {str(key): str(value) for key, value in metadata.items()}


Handler = Callable[[Request, Principal], Awaitable[Response]]


def _drift_handlers(store: StoreReader, defaults: DriftOptions) -> tuple[Handler, Handler]:
    """The drift report and gate handlers (``/api/v1/drift``, ``/api/v1/drift/gate``)."""

    async def drift_result(request: Request, principal: Principal, extra: frozenset[str]) -> tuple[AgentDrift, str]:
        params = _single_params(request, DRIFT_PARAMETERS | extra)
        if request.method == "POST":
            params = {**await _webhook_metadata(request, DRIFT_PARAMETERS | extra), **params}
        on_inconclusive = params.pop("on_inconclusive", "pass")
        if on_inconclusive not in ("pass", "fail"):
            raise InvalidQuery(f"on_inconclusive must be pass or fail, got {on_inconclusive!r}")
        tenant = _tenant_for(principal, params.pop("tenant", None))
        agent, options = options_from_params(params, defaults)
        options = replace(options, tenant=tenant)
        try:
            result = await run_in_threadpool(analyze, store, agent, options)
        except AgentNotFound as exc:
            raise _HttpError(404, str(exc)) from None
        return result, on_inconclusive

    async def drift(request: Request, principal: Principal) -> Response:
        result, _ = await drift_result(request, principal, frozenset())
        return JSONResponse({"drift": result.to_dict()})

    async def drift_gate(request: Request, principal: Principal) -> Response:
        result, on_inconclusive = await drift_result(request, principal, frozenset({"on_inconclusive"}))
        go = result.verdict == "pass" or (result.verdict == "inconclusive" and on_inconclusive == "pass")
        body = {
            "agent": result.agent,
            "verdict": result.verdict,
            "go": go,
            "reasons": list(result.report.reasons),
            "baseline_runs": result.report.baseline_runs,
            "canary_runs": result.report.canary_runs,
        }
        return JSONResponse(body, status_code=200 if go else 412)

    return drift, drift_gate


def read_routes(
    *,
    store: StoreReader,
    authenticator: Authenticator,
    is_ready: Callable[[], tuple[bool, str]],
    drift_options: DriftOptions | None = None,
) -> list[BaseRoute]:
    """The ``/api/v1`` routes over ``store``; ``is_ready`` gates them (503 with its reason when not ready).

    ``drift_options`` are the drift defaults (the collector's ``drift_*`` settings); parameters override them.
    """

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                principal = authenticator.authenticate(request.headers.get("authorization"), Scope.READ)
            except AuthError as exc:
                headers = {"WWW-Authenticate": 'Bearer realm="agentwatch"'} if exc.status == 401 else None
                return _error(exc.status, exc.message, headers)
            ready, reason = is_ready()
            if not ready:
                return _error(503, f"store not ready: {reason}", {"Retry-After": _RETRY_AFTER_S})
            try:
                return await handler(request, principal)
            except InvalidQuery as exc:
                return _error(400, str(exc))
            except _HttpError as exc:
                return _error(exc.status, exc.message, exc.headers)
            except StoreUnavailable as exc:
                # an outage (network, server gone, schema being migrated): the reader should retry later
                log.warning("read API: %s %s: %s", request.method, request.url.path, exc)
                return _error(503, "store unavailable, retry later", {"Retry-After": _RETRY_AFTER_S})
            except StoreError:
                # the store refused our own SQL: a bug here, never the caller's fault
                log.exception("read API: %s %s failed", request.method, request.url.path)
                return _error(500, "internal error reading the store")

        return endpoint

    async def runs(request: Request, principal: Principal) -> Response:
        flt = _filter(_single_params(request, _RUNS_PARAMETERS), principal)
        rows = await run_in_threadpool(list_runs, store, flt)
        return JSONResponse({"runs": [row.to_dict() for row in rows]})

    async def run(request: Request, principal: Principal) -> Response:
        params = _single_params(request, frozenset({"tenant"}))
        tenant = _tenant_for(principal, params.get("tenant"))
        found = await run_in_threadpool(get_run, store, request.path_params["run_id"], tenant=tenant)
        if found is None:
            raise _HttpError(404, "no such run")
        return JSONResponse({"run": found.to_dict()})

    async def trace(request: Request, principal: Principal) -> Response:
        params = _single_params(request, _TRACE_PARAMETERS)
        tenant = _tenant_for(principal, params.get("tenant"))
        content = _flag("content", params.get("content"))
        run_or_trace_id = request.path_params["run_id"]
        view = await run_in_threadpool(
            functools.partial(get_trace, store, run_or_trace_id, tenant=tenant, content=content)
        )
        if view is None:
            raise _HttpError(404, "no such run")  # the same answer for an unknown run, trace, or another tenant's
        return JSONResponse({"trace": view.to_dict()})

    async def trace_by_id(request: Request, principal: Principal) -> Response:
        params = _single_params(request, _TRACE_PARAMETERS)
        tenant = _tenant_for(principal, params.get("tenant"))
        content = _flag("content", params.get("content"))
        view = await run_in_threadpool(
            functools.partial(get_trace_by_id, store, request.path_params["trace_id"], tenant=tenant, content=content)
        )
        if view is None:
            raise _HttpError(404, "no such trace")
        return JSONResponse({"trace": view.to_dict()})

    async def recordings(request: Request, principal: Principal) -> Response:
        # what `agentwatch replay --collector` replays: runs with their captured input, tool calls and output
        params = _single_params(request, FILTER_PARAMETERS)
        flt = RecordingFilter.from_params(params, tenant=_tenant_for(principal, params.get("tenant")))
        found = await run_in_threadpool(load_recordings, store, flt)
        return JSONResponse({"recordings": [run.to_dict() for run in found]})

    async def fleet_stats(request: Request, principal: Principal) -> Response:
        flt = _filter(_single_params(request, _STATS_PARAMETERS), principal)
        result = await run_in_threadpool(stats, store, flt)
        return JSONResponse({"stats": result.to_dict()})

    drift, drift_gate = _drift_handlers(store, drift_options or DriftOptions())

    return [
        Route(f"{API_PREFIX}/drift", guarded(drift), methods=["GET"]),
        Route(f"{API_PREFIX}/drift/gate", guarded(drift_gate), methods=["GET", "POST"]),
        Route(f"{API_PREFIX}/runs", guarded(runs), methods=["GET"]),
        Route(f"{API_PREFIX}/runs/{{run_id}}", guarded(run), methods=["GET"]),
        Route(f"{API_PREFIX}/runs/{{run_id}}/trace", guarded(trace), methods=["GET"]),
        Route(f"{API_PREFIX}/traces/{{trace_id}}", guarded(trace_by_id), methods=["GET"]),
        Route(f"{API_PREFIX}/stats", guarded(fleet_stats), methods=["GET"]),
        Route(f"{API_PREFIX}/recordings", guarded(recordings), methods=["GET"]),
    ]


__all__ = ["API_PREFIX", "read_routes"]
