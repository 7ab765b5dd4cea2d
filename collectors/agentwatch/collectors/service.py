"""Wires the collector together and runs it: receivers, spool, writer, metrics endpoint, read API.

``CollectorService`` is what ``agentwatch collector`` runs and what the demo and tests start in
process. Every listener can bind port 0; the bound ports are reported after ``start()``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from agentwatch.collectors.auth import Authenticator
from agentwatch.collectors.drift_analyzer import DriftLoop, DriftOptions
from agentwatch.collectors.grpc_server import start_grpc_server
from agentwatch.collectors.http_app import create_app
from agentwatch.collectors.metrics import CONTENT_TYPE, CollectorMetrics
from agentwatch.collectors.pipeline import Pipeline
from agentwatch.collectors.readapi import read_routes
from agentwatch.collectors.schema import SchemaOptions
from agentwatch.collectors.settings import CollectorSettings, parse_address
from agentwatch.collectors.spool import Spool
from agentwatch.collectors.store import ClickHouseStore, redacted_url
from agentwatch.collectors.writer import SpoolWriter
from agentwatch.instrumentation.redaction import Redactor

log = logging.getLogger("agentwatch.collector")


def start_metrics_server(metrics: CollectorMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` from the collector's own registry (never the process-global one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in {"/metrics", "/"}:
                self.send_error(404)
                return
            body = metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="agentwatch-metrics", daemon=True
    ).start()
    return server


def schema_options(settings: CollectorSettings, database: str) -> SchemaOptions:
    return SchemaOptions(
        database=database,
        cluster=settings.cluster or None,
        traces_ttl_days=settings.traces_ttl_days,
        runs_ttl_days=settings.runs_ttl_days,
    )


class CollectorService:
    """One collector process: start(), then wait_ready(); stop() drains what it can and closes."""

    def __init__(self, settings: CollectorSettings) -> None:
        settings.check_exposure()
        self.settings = settings
        self.authenticator = Authenticator.from_file(settings.tokens) if settings.tokens else Authenticator()
        self.metrics = CollectorMetrics(
            max_tools_per_agent=settings.max_tools_per_agent, max_models_per_agent=settings.max_models_per_agent
        )
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
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        self._uvicorn: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: Any = None
        self._metrics_server: Any = None
        self._stopped = threading.Event()

    def _is_ready(self) -> tuple[bool, str]:
        if self.writer.ready:
            return True, "store reachable, schema applied"
        return False, self.writer.last_error or "connecting to the store"

    def start(self) -> None:
        self.writer.start()
        http_host, http_port = parse_address(self.settings.otlp_http, setting="otlp_http")
        app = create_app(
            pipeline=self.pipeline,
            max_body_bytes=self.settings.max_body_bytes,
            is_ready=self._is_ready,
            extra_routes=read_routes(
                store=self.store,
                authenticator=self.authenticator,
                is_ready=self._is_ready,
                drift_options=self.drift_options,
            ),
        )
        family = socket.AF_INET6 if ":" in http_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((http_host, http_port))
        sock.listen(1024)
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        server = uvicorn.Server(config)
        self._uvicorn = server
        self._http_thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="agentwatch-http", daemon=True
        )
        self._http_thread.start()
        if self.settings.otlp_grpc:
            self._grpc, self.grpc_port = start_grpc_server(
                self.pipeline, self.settings.otlp_grpc, max_body_bytes=self.settings.max_body_bytes
            )
        if self.settings.metrics:
            host, port = parse_address(self.settings.metrics, setting="metrics")
            self._metrics_server = start_metrics_server(self.metrics, host, port)
            self.metrics_port = self._metrics_server.server_port
        if self.drift_loop is not None:
            self.drift_loop.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        log.info(
            "agentwatch collector: OTLP/HTTP :%d, OTLP/gRPC :%s, /metrics :%s, store %s",
            self.http_port,
            self.grpc_port or "off",
            self.metrics_port or "off",
            redacted_url(self.settings.clickhouse),
        )

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
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait()
        if self._http_thread is not None:
            self._http_thread.join(timeout=10)
        if self.drift_loop is not None:
            self.drift_loop.stop()
        self.writer.stop(drain_timeout_s=drain_timeout_s)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.spool.close()
        self.store.close()

    def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM (what ``agentwatch collector`` does)."""
        stop = threading.Event()

        def _on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        self.start()
        while not stop.wait(0.5):
            pass
        log.info("shutting down: draining the spool")
        self.stop()
