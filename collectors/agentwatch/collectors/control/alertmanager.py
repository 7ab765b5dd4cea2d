"""Alertmanager's webhook payload → kill-switch orders (detect, then stop).

Only firing alerts labelled ``agentwatch_kill="true"`` act; each needs an ``agent`` label and may
carry ``tenant`` (a tenant's token always confines the order to its own tenant). The switch is
engaged with an expiry, ``agentwatch_kill_expires`` (``30m``, ``2h``; default 1 h), so an automatic
stop ends by itself unless a person extends it. Resolved alerts release nothing: people do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from agentwatch.collectors.read.filters import InvalidQuery
from agentwatch.instrumentation.killswitch import scope_for

KILL_LABEL: Final = "agentwatch_kill"
EXPIRES_LABEL: Final = "agentwatch_kill_expires"
DEFAULT_EXPIRY_S: Final = 3600.0
MAX_EXPIRY_S: Final = 7 * 86_400.0
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True, slots=True)
class KillOrder:
    scope: str
    alert: str
    reason: str
    expires_in_s: float


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` → seconds; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected a duration like 30m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def kill_orders(payload: dict[str, Any], *, tenant: str | None) -> list[KillOrder]:
    """The orders in one webhook payload (version 4 of Alertmanager's webhook format)."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise InvalidQuery("expected an Alertmanager webhook payload with an 'alerts' list")
    orders: dict[str, KillOrder] = {}
    for alert in alerts:
        if not isinstance(alert, dict) or alert.get("status") != "firing":
            continue
        labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
        assert isinstance(labels, dict)
        if str(labels.get(KILL_LABEL, "")).lower() != "true" or not labels.get("agent"):
            continue
        name = str(labels.get("alertname", "alert"))
        try:
            expires = parse_duration(str(labels[EXPIRES_LABEL])) if EXPIRES_LABEL in labels else DEFAULT_EXPIRY_S
            scope = scope_for(str(labels["agent"]), tenant if tenant is not None else labels.get("tenant") or None)
        except ValueError as exc:
            raise InvalidQuery(f"alert {name}: {exc}") from None
        annotations = alert.get("annotations") if isinstance(alert.get("annotations"), dict) else {}
        assert isinstance(annotations, dict)
        summary = str(annotations.get("summary", ""))
        orders[scope] = KillOrder(
            scope=scope,
            alert=name,
            reason=f"{name}: {summary}" if summary else name,
            expires_in_s=min(expires, MAX_EXPIRY_S),
        )
    return list(orders.values())


__all__ = ["DEFAULT_EXPIRY_S", "EXPIRES_LABEL", "KILL_LABEL", "KillOrder", "kill_orders", "parse_duration"]
