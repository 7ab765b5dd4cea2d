"""The collector's control plane from an agent process: a remote kill switch and a remote approver.

``RemoteKillSwitch`` is a kill-switch source. A daemon thread long-polls the collector
(``GET /api/v1/control/killswitch?wait=...`` with ``If-None-Match``: an unchanged state costs one
304 per wait; a change arrives as soon as the collector sees it). ``engaged_scopes`` — the hot
path, before every step and tool call — only reads the cached set: no network, no lock. When the
collector has not answered for ``stale_after`` seconds (or has not answered yet), the source is
unavailable (``KillSwitchUnavailable``), and the gateway applies the fail-closed rule: write and
approval tools are refused, reads and steps go on.

``RemoteApprover`` files the approval with the collector (which can notify a webhook with
approve/reject links), then long-polls that approval until a person decides in
``agentwatch approvals`` or the timeout passes (a rejection). The decision's token reaches the
tool as ``approval_token``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Final

from agentwatch.instrumentation._approval import ApprovalDecision, ApprovalRequest
from agentwatch.instrumentation.killswitch import KillSwitchUnavailable, parse_scope

logger: Final = logging.getLogger("agentwatch.killswitch")

_PATH: Final = "/api/v1/control/killswitch"
_APPROVALS: Final = "/api/v1/control/approvals"


def _base(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"collector url must be http(s)://HOST:PORT, got {url!r}")
    return url.rstrip("/")


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class RemoteKillSwitch:
    """Kill-switch source backed by a collector's control API; combine it with others in ``KillSwitch``.

    ``stale_after``: how long the cached state may go without a fresh answer before the source
    counts as unavailable (fail-closed for writes). ``wait``: how long one long-poll may hold (kept
    under a third of ``stale_after``, so a healthy connection never looks stale). ``initial_wait``:
    how long the constructor waits for the first answer (0: return at once; until an answer comes
    the source is unavailable). ``close()`` stops the thread.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        stale_after: float = 10.0,
        wait: float = 20.0,
        retry_interval: float = 0.5,
        initial_wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = _base(url)
        self._token = token
        self._stale_after = _positive("stale_after", stale_after)
        # an answer is fresh as of when it was asked for, so the oldest state a healthy poll leaves is
        # about two waits old: a third of the bound keeps that well inside it
        self._wait = min(_positive("wait", wait), self._stale_after / 3)
        self._retry = _positive("retry_interval", retry_interval)
        self._clock = clock
        self._name = f"remote:{self._base}"
        # (scopes, time of the answer): replaced as a whole, read without a lock
        self._state: tuple[frozenset[str], float] | None = None
        self._etag: str | None = None
        self._error = "no answer from the collector yet"
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="agentwatch-remote-killswitch", daemon=True)
        self._thread.start()
        if initial_wait > 0:
            self._first.wait(initial_wait)

    @property
    def name(self) -> str:
        return self._name

    def engaged_scopes(self) -> frozenset[str]:
        state = self._state
        if state is None:
            raise KillSwitchUnavailable(self._name, self._error)
        scopes, at = state
        age = self._clock() - at
        if age > self._stale_after:
            raise KillSwitchUnavailable(
                self._name, f"no fresh state for {age:.0f}s (stale after {self._stale_after:g}s): {self._error}"
            )
        return scopes

    def refresh(self, timeout: float = 5.0) -> None:
        """Fetch the state now (synchronously); raises OSError or ValueError when that fails."""
        self._fetch(wait=0.0, timeout=timeout, conditional=False)

    def _fetch(self, *, wait: float, timeout: float, conditional: bool = True) -> None:
        asked = self._clock()
        query = f"?wait={wait:g}" if wait > 0 else ""
        request = urllib.request.Request(self._base + _PATH + query, headers={"Accept": "application/json"})
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        if conditional and self._etag is not None and self._state is not None:
            request.add_header("If-None-Match", self._etag)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                document = json.loads(response.read())
                etag = response.headers.get("ETag")
        except urllib.error.HTTPError as exc:
            if exc.code != 304 or self._state is None:
                raise
            # unchanged: the cached set is fresh as of when this request was sent
            self._state = (self._state[0], asked)
            return
        scopes = document.get("scopes") if isinstance(document, dict) else None
        if not isinstance(scopes, list):
            raise ValueError("the collector answered without a scopes list")
        self._etag = etag
        self._state = (frozenset(parse_scope(str(scope)) for scope in scopes), asked)
        self._first.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._fetch(wait=self._wait, timeout=self._wait + 5.0)
                self._first.set()
                self._error = "the collector stopped answering"
            except Exception as exc:
                message = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                self._error = f"{type(exc).__name__}: {message}"
                logger.debug("remote kill switch %s: %s", self._base, self._error)
                self._stop.wait(self._retry)

    def close(self) -> None:
        self._stop.set()

    def __repr__(self) -> str:
        return f"RemoteKillSwitch({self._base!r}, stale_after={self._stale_after:g})"


class RemoteApprover:
    """An approver that asks people through the collector; pass it as ``ToolGateway(approver=...)``.

    ``timeout`` bounds the wait for a decision (keep it at or under the gateway's
    ``approval_timeout``); no decision by then is a rejection. ``webhook``: a URL the collector
    notifies with approve/reject links (it must be under a prefix in the collector's
    ``approval_webhooks``).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        webhook: str | None = None,
        timeout: float = 300.0,
        poll_wait: float = 20.0,
        by: str | None = None,
    ) -> None:
        self._base = _base(url)
        self._token = token
        self._webhook = webhook
        self._timeout = _positive("timeout", timeout)
        self._poll_wait = _positive("poll_wait", poll_wait)
        self._by = by

    def _call(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        data = json.dumps(body, default=str).encode() if body is not None else None
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            document = json.loads(response.read())
        if not isinstance(document, dict) or not isinstance(document.get("approval"), dict):
            raise ValueError("the collector answered without an approval")
        approval: dict[str, Any] = document["approval"]
        return approval

    def approve(self, request: ApprovalRequest) -> ApprovalDecision:
        deadline = time.monotonic() + self._timeout
        body: dict[str, Any] = {
            "agent": request.agent,
            "tool": request.tool,
            "arguments": dict(request.args),
            "rule": request.rule,
            "run_id": request.run_id or "",
            "call_id": request.call_id or "",
        }
        if request.tenant_id:
            body["tenant"] = request.tenant_id
        if self._webhook:
            body["webhook"] = self._webhook
        if self._by:
            body["by"] = self._by
        approval = self._call("POST", _APPROVALS, body, timeout=10.0)
        approval_id = urllib.parse.quote(str(approval["id"]), safe="")
        while approval.get("status") == "pending":
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ApprovalDecision(False, reason=f"no decision on approval {approval['id']} within the timeout")
            wait = min(self._poll_wait, remaining)
            try:
                approval = self._call("GET", f"{_APPROVALS}/{approval_id}?wait={wait:g}", None, timeout=wait + 10.0)
            except (OSError, ValueError) as exc:
                logger.warning("waiting for approval %s: %s", approval_id, exc)
                time.sleep(min(1.0, max(remaining, 0.0)))
        approved = approval.get("status") == "approved"
        return ApprovalDecision(
            approved=approved,
            approver=approval.get("decided_by"),
            reason=approval.get("reason"),
            token=approval.get("token") if approved else None,
        )

    def __repr__(self) -> str:
        return f"RemoteApprover({self._base!r})"


__all__ = ["RemoteApprover", "RemoteKillSwitch"]
