"""The read API over real HTTP for CLI tests: the product's own listener, on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from starlette.applications import Starlette

from agentwatch.collectors.config.auth import Authenticator
from agentwatch.collectors.service.http_server import ReadTimeouts, start_server
from agentwatch.collectors.service.read_api import read_routes
from agentwatch.collectors.store.clickhouse import ClickHouseStore


@contextlib.contextmanager
def serve_read_api(
    store: ClickHouseStore,
    authenticator: Authenticator,
    *,
    is_ready: Callable[[], tuple[bool, str]] = lambda: (True, "ok"),
) -> Iterator[str]:
    """Serve ``/api/v1`` over ``store`` as the collector does; yields the base URL, stops on exit."""
    app = Starlette(routes=read_routes(store=store, authenticator=authenticator, is_ready=is_ready))
    server = start_server(app, "127.0.0.1:0", setting="read_api", timeouts=ReadTimeouts(), name="test-read-api")
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
