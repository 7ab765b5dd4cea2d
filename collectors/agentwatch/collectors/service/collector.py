"""Wires the collector together and runs it: receivers, spool, writer, metrics endpoint, read API.

``CollectorService`` is what ``agentwatch collector`` runs and what the demo and tests start in
process. Every listener can bind port 0; the bound ports are reported after ``start()``. Both HTTP
listeners run through ``http_server.start_server`` (uvicorn with header and body read timeouts).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from agentwatch.collectors.config.auth import Authenticator, AuthError, Scope
from agentwatch.collectors.config.settings import CollectorSettings, is_loopback, parse_address
from agentwatch.collectors.control.api import control_routes
from agentwatch.collectors.control.state import ControlPlane
from agentwatch.collectors.drift.analyzer import DriftLoop, DriftOptions
from agentwatch.collectors.ingest.grpc_receiver import start_grpc_server
from agentwatch.collectors.ingest.http_receiver import create_app
from agentwatch.collectors.ingest.pipeline import Pipeline
from agentwatch.collectors.metrics import CollectorMetrics
from agentwatch.collectors.service.http_server import (
    ReadTimeouts,
    RunningServer,
    bind_listener,
    check_bindable,
    start_server,
)
from agentwatch.collectors.service.read_api import read_routes
from agentwatch.collectors.service.sql_guard import Limits
from agentwatch.collectors.store.clickhouse import ClickHouseStore, redacted_url
from agentwatch.collectors.store.schema import SchemaOptions
from agentwatch.collectors.store.spool import Spool
from agentwatch.collectors.store.writer import SpoolWriter
from agentwatch.instrumentation.redaction import Redactor

log = logging.getLogger("agentwatch.collector")


class _MetricsEndpoint:
    """prometheus_client's ASGI app, behind a check for a ``metrics``-scoped token when one is wanted.

    A class, not a function: Starlette's ``Route`` hands raw ASGI calls only to non-function endpoints.
    """

    def __init__(self, exposition: ASGIApp, authenticator: Authenticator | None) -> None:
        self.exposition = exposition
        self.authenticator = authenticator

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if self.authenticator is not None:
            try:
                self.authenticator.authenticate(Request(scope).headers.get("authorization"), Scope.METRICS)
            except AuthError as exc:
                headers = {"WWW-Authenticate": 'Bearer realm="agentwatch"'} if exc.status == 401 else None
                reply = JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
                await reply(scope, receive, send)
                return
        await self.exposition(scope, receive, send)


def create_metrics_app(metrics: CollectorMetrics, authenticator: Authenticator | None) -> Starlette:
    """``GET /metrics`` (and ``/``) from the collector's own registry, via prometheus_client's ASGI app.

    With ``authenticator``, each scrape needs a bearer token with the ``metrics`` scope; None serves
    everyone (``metrics_authenticator`` decides which).
    """
    exposition = make_asgi_app(registry=metrics.exposed)
    endpoint = _MetricsEndpoint(exposition, authenticator)
    return Starlette(routes=[Route(path, endpoint, methods=["GET"]) for path in ("/metrics", "/")])


def metrics_authenticator(settings: CollectorSettings, authenticator: Authenticator) -> Authenticator | None:
    """Who may read /metrics: token holders (scope ``metrics``) when tokens are configured and it listens
    beyond loopback; everyone on loopback (Prometheus on the same host, tests) and, without tokens,
    under ``insecure_allow_remote`` (``check_exposure`` refuses the rest).

    "Beyond loopback" is judged by the bind address, not by the peer: a wildcard bind takes requests
    from anywhere, and a peer address proves little behind a proxy or a published container port.
    """
    host, _port = parse_address(settings.metrics, setting="metrics")
    if is_loopback(host) or not authenticator.enabled:
        return None
    return authenticator


def schema_options(settings: CollectorSettings, database: str) -> SchemaOptions:
    return SchemaOptions(
        database=database,
        cluster=settings.cluster or None,
        traces_ttl_days=settings.traces_ttl_days,
        runs_ttl_days=settings.runs_ttl_days,
    )


def bind_listeners(settings: CollectorSettings) -> tuple[socket.socket, socket.socket | None]:
    """Bind OTLP/HTTP and /metrics, and check OTLP/gRPC can bind; raises ``ListenerError`` naming the flag.

    The HTTP sockets are held and later served by ``start()``; grpcio binds its own socket, so its
    address is only checked here (a check-then-bind race, see ``check_bindable``).
    """
    held: list[socket.socket] = []
    try:
        held.append(bind_listener(settings.otlp_http, setting="otlp_http"))
        if settings.otlp_grpc:
            check_bindable(settings.otlp_grpc, setting="otlp_grpc")
        if settings.metrics:
            held.append(bind_listener(settings.metrics, setting="metrics"))
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held[0], held[1] if len(held) > 1 else None


# Loggers that repeat a store outage on every retry, with query ids: the writer says it once instead.
_DRIVER_RETRY_LOGGERS = (
    "urllib3.connectionpool",
    "clickhouse_connect.driver._backend.http_sync",
    "clickhouse_connect.driver.httpclient",
)


def quiet_driver_retries() -> None:
    """Keep only errors from the HTTP driver's loggers (their warnings repeat what the writer reports)."""
    for name in _DRIVER_RETRY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # leave an explicit choice alone
            logger.setLevel(logging.ERROR)


class CollectorService:
    """One collector process: start(), then wait_ready(); stop() drains what it can and closes."""

    def __init__(self, settings: CollectorSettings) -> None:
        settings.check_exposure()
        self.settings = settings
        self.authenticator = Authenticator.from_file(settings.tokens) if settings.tokens else Authenticator()
        self.metrics = CollectorMetrics(
            max_tools_per_agent=settings.max_tools_per_agent, max_models_per_agent=settings.max_models_per_agent
        )
        # Listeners first: a busy port is reported (ListenerError, naming the flag) before the
        # spool and the store exist, so a failed start leaves no ./agentwatch-data behind.
        self._http_socket, self._metrics_socket = bind_listeners(settings)
        self._sql_socket: socket.socket | None = None
        try:
            if settings.sql:
                self._sql_socket = bind_listener(settings.sql, setting="sql")
            self._open_the_rest(settings)
        except BaseException:
            self._close_listeners()
            raise
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        self.sql_port = 0
        self._http_server: RunningServer | None = None
        self._grpc: Any = None
        self._metrics_server: RunningServer | None = None
        self._sql_server: RunningServer | None = None
        self._stopped = threading.Event()

    def _open_the_rest(self, settings: CollectorSettings) -> None:
        quiet_driver_retries()
        self.spool = Spool(Path(settings.spool), max_bytes=settings.spool_max_bytes)
        self.store = ClickHouseStore.open(settings.clickhouse, database=settings.database or None)
        self.writer = SpoolWriter(
            spool=self.spool,
            store=self.store,
            metrics=self.metrics,
            schema=schema_options(settings, self.store.database),
            dead_letter_dir=Path(settings.spool) / "dead-letter",
            batch_max_spans=settings.batch_max_spans,
            batch_max_bytes=settings.batch_max_bytes,
            batch_timeout_s=settings.batch_timeout_seconds,
        )
        self.pipeline = Pipeline(
            settings=settings,
            spool=self.spool,
            metrics=self.metrics,
            authenticator=self.authenticator,
            redactor=Redactor() if settings.redact else None,
        )
        self.control = ControlPlane(self.store)
        self.drift_options = DriftOptions.from_settings(settings)
        self.drift_loop: DriftLoop | None = None
        if settings.drift_enabled:
            self.drift_loop = DriftLoop(
                self.store,
                self.metrics,
                self.drift_options,
                interval_s=settings.drift_interval_seconds,
                is_ready=lambda: self.writer.ready,
            )

    def _close_listeners(self) -> None:
        for sock in (self._http_socket, self._metrics_socket, self._sql_socket):
            if sock is not None:
                sock.close()

    def _is_ready(self) -> tuple[bool, str]:
        if self.writer.ready:
            return True, "store reachable, schema applied"
        return False, self.writer.last_error or "connecting to the store"

    def _can_take_work(self) -> tuple[bool, str]:
        """/readyz: the store is ready and the pipeline has room (decode slots, spool)."""
        ready, reason = self._is_ready()
        if not ready:
            return ready, reason
        refusal = self.pipeline.refusal()
        return (False, refusal) if refusal else (True, reason)

    def start(self) -> None:
        self.writer.start()
        app = create_app(
            pipeline=self.pipeline,
            max_body_bytes=self.settings.max_body_bytes,
            is_ready=self._can_take_work,
            extra_routes=read_routes(
                store=self.store,
                authenticator=self.authenticator,
                is_ready=self._is_ready,
                drift_options=self.drift_options,
            )
            + control_routes(
                control=self.control,
                authenticator=self.authenticator,
                is_ready=self._is_ready,
                webhooks=tuple(url for url in self.settings.approval_webhooks.split(",") if url.strip()),
                redactor=Redactor() if self.settings.redact else None,
            ),
        )
        timeouts = ReadTimeouts(
            header_s=self.settings.header_timeout_seconds, body_s=self.settings.body_timeout_seconds
        )
        self._http_server = start_server(
            app,
            self.settings.otlp_http,
            setting="otlp_http",
            timeouts=timeouts,
            name="agentwatch-http",
            sock=self._http_socket,
        )
        self.http_port = self._http_server.port
        if self.settings.otlp_grpc:
            self._grpc, self.grpc_port = start_grpc_server(
                self.pipeline, self.settings.otlp_grpc, max_body_bytes=self.settings.max_body_bytes
            )
        if self.settings.metrics:
            metrics_app = create_metrics_app(self.metrics, metrics_authenticator(self.settings, self.authenticator))
            self._metrics_server = start_server(
                metrics_app,
                self.settings.metrics,
                setting="metrics",
                timeouts=timeouts,
                name="agentwatch-metrics",
                sock=self._metrics_socket,
            )
            self.metrics_port = self._metrics_server.port
        if self._sql_socket is not None:
            self._start_sql(timeouts)
        if self.drift_loop is not None:
            self.drift_loop.start()
        log.info(
            "agentwatch collector: OTLP/HTTP :%d, OTLP/gRPC :%s, /metrics :%s, SQL :%s, store %s",
            self.http_port,
            self.grpc_port or "off",
            self.metrics_port or "off",
            self.sql_port or "off",
            redacted_url(self.settings.clickhouse),
        )

    def _start_sql(self, timeouts: ReadTimeouts) -> None:
        """The read-only ClickHouse HTTP interface for Grafana (``--sql``; embedded stores only)."""
        from agentwatch.collectors.service.sql_endpoint import create_sql_app

        settings = self.settings
        limits = Limits(
            max_execution_time=settings.sql_max_execution_seconds,
            max_memory_usage=settings.sql_max_memory_bytes,
            max_result_rows=settings.sql_max_result_rows,
            max_result_bytes=settings.sql_max_result_bytes,
        )
        app = create_sql_app(self.store, self.authenticator, limits)
        self._sql_server = start_server(
            app, settings.sql, setting="sql", timeouts=timeouts, name="agentwatch-sql", sock=self._sql_socket
        )
        self.sql_port = self._sql_server.port

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.writer.ready:
                return True
            time.sleep(0.02)
        return self.writer.ready

    def stop(self, *, drain_timeout_s: float = 10.0) -> None:
        """Stop accepting, drain the spool to ClickHouse within the deadline, close everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._http_server is not None:
            self._http_server.server.should_exit = True  # stop accepting now; joined below
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait()
        if self._http_server is not None:
            self._http_server.stop(timeout_s=10)
        if self.drift_loop is not None:
            self.drift_loop.stop()
        self.writer.stop(drain_timeout_s=drain_timeout_s)
        if self._metrics_server is not None:
            self._metrics_server.stop(timeout_s=5)
        if self._sql_server is not None:  # before the store closes: its queries run on the store's engine
            self._sql_server.stop(timeout_s=5)
        self._close_listeners()  # those never handed to a server (stop without start)
        self.spool.close()
        self.store.close()

    def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM (what ``agentwatch collector`` does).

        The first signal drains the spool and stops; a second one while that runs exits at once.
        Everything acknowledged is already in the fsynced spool, so the hard exit loses nothing:
        the next start sends it to ClickHouse.
        """
        stop = threading.Event()

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            if stop.is_set():
                log.warning("second %s while stopping: exiting now; the spool keeps what was not written", signum)
                os._exit(128 + signum)
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        self.start()
        while not stop.wait(0.5):
            pass
        log.info("shutting down: draining the spool")
        self.stop()
