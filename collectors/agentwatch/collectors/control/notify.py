"""Approval webhooks: the collector tells a chat or paging receiver that an approval waits.

The receiver gets ``{"text", "approval", "approve_url", "reject_url"}``; the links are the control
API's decision routes (a POST with a ``control`` token decides). Only URLs under a prefix the
operator listed (``approval_webhooks``) are called, so an ingest token cannot make the collector
send requests anywhere. Delivery runs in a daemon thread with a short timeout and is logged, never
retried: the approval stays pending and visible in ``agentwatch approvals`` either way.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Final

log = logging.getLogger("agentwatch.collector.control")
_TIMEOUT_S: Final = 5.0


class WebhookNotifier:
    def __init__(self, prefixes: Iterable[str] = ()) -> None:
        self._prefixes = tuple(p.strip() for p in prefixes if p.strip())

    def allowed(self, url: str) -> bool:
        return url.startswith(("http://", "https://")) and any(url.startswith(p) for p in self._prefixes)

    def send(self, url: str, approval: Mapping[str, object], *, approve_url: str, reject_url: str) -> None:
        text = (
            f"agent {approval.get('agent')} asks to run {approval.get('tool')} "
            f"(tenant {approval.get('tenant') or '-'}): agentwatch approvals approve {approval.get('id')}"
        )
        body = json.dumps(
            {"text": text, "approval": dict(approval), "approve_url": approve_url, "reject_url": reject_url}
        ).encode()
        threading.Thread(target=self._post, args=(url, body), name="agentwatch-webhook", daemon=True).start()

    @staticmethod
    def _post(url: str, body: bytes) -> None:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                response.read()
        except Exception as exc:
            log.warning("approval webhook %s failed: %s", url, exc)


__all__ = ["WebhookNotifier"]
