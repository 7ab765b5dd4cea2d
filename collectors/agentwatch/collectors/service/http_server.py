"""The collector's HTTP listeners: uvicorn in a daemon thread, with header and body read timeouts.

Both HTTP listeners (OTLP/HTTP with the read API, and /metrics) start through ``start_server``.
uvicorn bounds how long an idle kept-alive connection may stay open, but nothing else about reading
a request: a client that drips the request head or its body a byte at a time holds a connection
(and, for a body, an ASGI task) open for as long as it likes, and a few hundred of them exhaust
the process. ``ReadTimeoutProtocol`` closes such connections:

- the head (request line and headers) must be complete within ``header_s`` of the connection's
  first moment, or, on a kept-alive connection, of the next request's first byte (the wait for
  that byte stays uvicorn's keep-alive timeout, as in Go's ``ReadHeaderTimeout``/``IdleTimeout``);
- the body must be complete within ``body_s`` of the head.

On expiry the connection answers ``408 Request Timeout`` when part of a request has arrived and no
response has started, and is closed either way. An idle connection that never sent a byte is
closed silently: a 408 there could race a request the client is sending at that moment and be
taken for its answer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import h11
import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from agentwatch.collectors.config.settings import SettingsError, parse_address

log = logging.getLogger("agentwatch.collector")

_STARTUP_TIMEOUT_S = 10.0
_TIMEOUT_BODY = b"request not received in time\n"
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode("ascii") + b"\r\n\r\n" + _TIMEOUT_BODY
)


@dataclass(frozen=True, slots=True)
class ReadTimeouts:
    """Seconds a client has for a request's head and for its body (both positive)."""

    header_s: float = 10.0
    body_s: float = 30.0


class ReadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol plus the two read timers (see the module docstring).

    The timers follow h11's view of the client (``their_state``), checked after every batch of
    parsed events: a new connection, or IDLE with bytes of a request buffered, is the head phase;
    SEND_BODY the body phase; anything else needs no timer (the request is read, or the connection
    is done). A timer runs from the start of its phase, so dripping bytes does not extend it.
    """

    timeouts: ClassVar[ReadTimeouts] = ReadTimeouts()

    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # from the first moment: a connection that never sends a head is held against this too
        self._header_timer = self.loop.call_later(self.timeouts.header_s, self._expire, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._sync_timers()

    def _sync_timers(self) -> None:
        state = self.conn.their_state
        if state is h11.IDLE:
            self._cancel_body_timer()
            # after a kept-alive response the wait for the next request is uvicorn's keep-alive
            # timeout; the head timer starts with that request's first byte
            if self._header_timer is None and self.conn.trailing_data[0]:
                self._header_timer = self.loop.call_later(self.timeouts.header_s, self._expire, "head")
        elif state is h11.SEND_BODY:
            self._cancel_header_timer()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.timeouts.body_s, self._expire, "body")
        else:
            self._cancel_header_timer()
            self._cancel_body_timer()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _expire(self, phase: str) -> None:
        if phase == "head":
            self._header_timer = None
        else:
            self._body_timer = None
        if self.transport.is_closing():
            return
        if phase == "body" and self.cycle is not None:
            send_408 = not self.cycle.response_started
            # the app's receive() now reports a disconnect and whatever it sends is dropped, so its
            # response cannot interleave with the 408 below
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        else:
            # head phase: no response to this request exists yet; answer only if a request began
            send_408 = bool(self.conn.trailing_data[0])
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        log.debug("closing the connection of %s: request %s not received in time", client, phase)
        if send_408:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def protocol_with(limits: ReadTimeouts) -> type[ReadTimeoutProtocol]:
    """A ``ReadTimeoutProtocol`` subclass bound to ``limits`` (uvicorn instantiates the class itself)."""

    class BoundReadTimeoutProtocol(ReadTimeoutProtocol):
        timeouts = limits

    return BoundReadTimeoutProtocol


class _QuietDisconnects:
    """Treats a client gone mid-body (or timed out by the protocol) as the end of the request, not a bug.

    Starlette raises ``ClientDisconnect`` from ``request.stream()``; unhandled, uvicorn would log it
    with a traceback as an application error, once per slow or vanished client.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            log.debug("client disconnected before its request body was complete: %s", scope.get("path"))


class ListenerError(SettingsError):
    """A listener address cannot be bound; the message names the address and the flag that sets it."""


def listener_error(setting: str, address: str, exc: OSError) -> ListenerError:
    """One line for a failed bind: ``--otlp-http 127.0.0.1:4318 is in use by another process; ...``."""
    flag = "--" + setting.replace("_", "-")
    if exc.errno == errno.EADDRINUSE:
        problem, fix = "is in use by another process", "choose another port"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        problem, fix = "is not permitted (ports below 1024 need privileges)", "choose another port"
    elif exc.errno == errno.EADDRNOTAVAIL:
        problem, fix = "is not an address of this host", "choose another address"
    else:
        problem, fix = f"cannot be listened on ({exc.strerror or exc})", "choose another address"
    return ListenerError(f"{flag} {address} {problem}; {fix} with {flag} HOST:PORT")


def bind_listener(address: str, *, setting: str) -> socket.socket:
    """``bind_socket`` for a ``HOST:PORT`` setting; a failure is a ``ListenerError`` naming it."""
    host, port = parse_address(address, setting=setting)
    try:
        return bind_socket(host, port)
    except OSError as exc:
        raise listener_error(setting, address, exc) from exc


def check_bindable(address: str, *, setting: str) -> None:
    """Raise ``ListenerError`` if ``address`` cannot be listened on now (for servers that bind themselves).

    Check-then-bind: the socket is closed again, so another process may take the port before the
    real server binds it; that rare race ends in the server's own bind error instead of this one.
    Port 0 needs no check.
    """
    _host, port = parse_address(address, setting=setting)
    if port != 0:
        bind_listener(address, setting=setting).close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket, bound before the server thread starts so the caller learns the port at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class RunningServer:
    """One uvicorn server in its own thread and event loop; ``port`` is the bound one (port 0 resolved)."""

    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, let responses in progress finish, and wait up to ``timeout_s`` for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout_s)


def start_server(
    app: ASGIApp,
    address: str,
    *,
    setting: str,
    timeouts: ReadTimeouts,
    name: str,
    keep_alive_s: int = 30,
    sock: socket.socket | None = None,
) -> RunningServer:
    """Serve ``app`` on ``address`` (``HOST:PORT``, port 0 for any) in a daemon thread; returns once it accepts.

    ``setting`` names the address in error messages. ``sock``, when given, is the listening socket
    ``bind_listener`` already made for ``address`` (the collector binds before it opens its store).
    HTTP/1.1 only, through h11 (httptools is never picked even when installed: the read timers
    live in the h11 protocol), and no WebSocket upgrades.
    """
    host, _port = parse_address(address, setting=setting)
    listening = sock if sock is not None else bind_listener(address, setting=setting)
    bound_port: int = listening.getsockname()[1]
    config = uvicorn.Config(
        _QuietDisconnects(app),
        http=protocol_with(timeouts),
        ws="none",
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=keep_alive_s,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listening])), name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    if not server.started:
        server.should_exit = True
        listening.close()
        raise RuntimeError(f"{setting}: the HTTP server on {address} did not start")
    return RunningServer(server=server, thread=thread, host=host, port=bound_port)
