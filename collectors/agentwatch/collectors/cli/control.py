"""``agentwatch kill | unkill | approvals | audit``: the control plane from a shell, at 3 a.m.

They talk to a running collector (``--collector URL``, default the local one; ``--token`` or
``AGENTWATCH_TOKEN``, a token with the ``control`` scope to change anything). Every replica of the
collector shares the state through the store, so any one of them will do.

    agentwatch kill --agent support --tenant acme --reason "prompt injection wave" --expires 30m
    agentwatch kill --all --reason "provider incident"
    agentwatch kill --list
    agentwatch unkill --agent support --tenant acme --reason "fixed"
    agentwatch approvals                      # pending ones
    agentwatch approvals approve ID
    agentwatch approvals reject ID --reason "not during the freeze"
    agentwatch audit --since 24h --agent support --kind killswitch --json

Exit codes: 0 ok, 1 not found or already decided, 2 usage, connection or permission error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from agentwatch.collectors.cli.read import (
    DEFAULT_COLLECTOR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    TOKEN_ENV,
    ReadError,
    _Refused,
    collector_url,
    exchange_json,
)
from agentwatch.collectors.control.alertmanager import parse_duration


class ControlError(ReadError):
    """A failure of a control command, reported as one line; ``code`` is the exit status."""


class ControlClient:
    """The control API of a running collector, over urllib."""

    def __init__(self, url: str, token: str | None) -> None:
        try:
            self.base = collector_url(url)
        except ReadError as exc:
            raise ControlError(str(exc)) from None
        self.token = token

    def call(
        self, method: str, path: str, *, body: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        try:
            return exchange_json(
                self.base + path + query, self.token, f"collector {self.base}", method=method, body=body
            )
        except _Refused as exc:
            raise ControlError(str(exc), EXIT_NOT_FOUND if exc.status in (404, 409) else EXIT_USAGE) from None
        except ReadError as exc:
            raise ControlError(str(exc)) from None


def _client(args: argparse.Namespace) -> ControlClient:
    return ControlClient(args.collector or DEFAULT_COLLECTOR, args.token or os.environ.get(TOKEN_ENV))


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _target(args: argparse.Namespace) -> dict[str, Any]:
    if args.all:
        if args.agent or args.tenant:
            raise ControlError("--all stops everything: leave out --agent and --tenant")
        return {"all": True}
    if not args.agent and not args.tenant:
        raise ControlError("name what to stop: --agent A, --tenant T, both, or --all")
    target: dict[str, Any] = {}
    if args.agent:
        target["agent"] = args.agent
    if args.tenant:
        target["tenant"] = args.tenant
    return target


def _when(value: object) -> str:
    return str(value).replace("T", " ").split(".")[0].removesuffix("Z") if value else "-"


def render_switch(document: dict[str, Any]) -> str:
    entries = document.get("entries") or []
    if not entries:
        return "kill switch: nothing engaged"
    lines = [f"{'SCOPE':<36} {'SINCE (UTC)':<20} {'EXPIRES (UTC)':<20} {'BY':<24} REASON"]
    for entry in entries:
        lines.append(
            f"{entry['scope']:<36} {_when(entry.get('updated_at')):<20} {_when(entry.get('expires_at')):<20} "
            f"{str(entry.get('actor', ''))[:24]:<24} {entry.get('reason', '')}"
        )
    return "\n".join(lines)


def render_approvals(approvals: list[dict[str, Any]]) -> str:
    if not approvals:
        return "approvals: none"
    lines = [f"{'ID':<32} {'STATUS':<9} {'AGENT':<16} {'TENANT':<12} {'TOOL':<20} {'FILED (UTC)':<20} DECIDED BY"]
    for a in approvals:
        lines.append(
            f"{a['id']:<32} {a['status']:<9} {str(a.get('agent'))[:16]:<16} {str(a.get('tenant') or '-')[:12]:<12} "
            f"{str(a.get('tool'))[:20]:<20} {_when(a.get('created_at')):<20} {a.get('decided_by') or '-'}"
        )
    return "\n".join(lines)


def render_audit(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "audit: no entries"
    lines = [f"{'TIME (UTC)':<20} {'KIND':<20} {'TENANT':<12} {'AGENT':<16} {'ACTOR':<28} WHAT"]
    for row in rows:
        what = " ".join(
            str(part) for part in (row.get("scope"), row.get("tool"), row.get("subject"), row.get("reason")) if part
        )
        lines.append(
            f"{_when(row.get('time')):<20} {row['kind']:<20} {str(row.get('tenant') or '-')[:12]:<12} "
            f"{str(row.get('agent') or '-')[:16]:<16} {str(row.get('actor') or '-')[:28]:<28} {what}"
        )
    return "\n".join(lines)


def _run(name: str, args: argparse.Namespace, body: Any) -> int:
    try:
        result: int = body(_client(args))
        return result
    except ControlError as exc:
        print(f"agentwatch {name}: {exc}", file=sys.stderr)
        return exc.code


def kill_command(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        if args.list:
            document = client.call("GET", "/api/v1/control/killswitch")
            print(json.dumps(document, indent=2) if args.json else render_switch(document))
            return EXIT_OK
        if not args.reason or not args.reason.strip():
            raise ControlError("--reason is required: it goes into the audit trail")
        request = {**_target(args), "reason": args.reason, "by": _who(args)}
        if args.expires:
            try:
                request["expires_in_seconds"] = parse_duration(args.expires)
            except ValueError as exc:
                raise ControlError(f"--expires: {exc}") from None
        document = client.call("POST", "/api/v1/control/killswitch", body=request)
        entry = document["entry"]
        if args.json:
            print(json.dumps(document, indent=2))
        else:
            expiry = f", expires {_when(entry.get('expires_at'))} UTC" if entry.get("expires_at") else ""
            print(f"engaged {entry['scope']}{expiry}: agents refuse their next step and tool call")
        return EXIT_OK

    return _run("kill", args, body)


def unkill_command(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        request = {**_target(args), "reason": args.reason or "", "by": _who(args)}
        document = client.call("DELETE", "/api/v1/control/killswitch", body=request)
        print(json.dumps(document, indent=2) if args.json else f"released {document['entry']['scope']}")
        return EXIT_OK

    return _run("unkill", args, body)


def approvals_command(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        if args.action in (None, "list"):
            params = {} if args.status == "all" else {"status": args.status}
            document = client.call("GET", "/api/v1/control/approvals", params=params)
            print(json.dumps(document, indent=2) if args.json else render_approvals(document["approvals"]))
            return EXIT_OK
        if not args.id:
            raise ControlError(f"approvals {args.action} needs the approval's ID")
        if args.action == "reject" and not (args.reason or "").strip():
            raise ControlError("approvals reject needs --reason: the agent and the audit trail get it")
        path = f"/api/v1/control/approvals/{urllib.parse.quote(args.id, safe='')}/{args.action}"
        document = client.call("POST", path, body={"reason": args.reason or "", "by": _who(args)})
        approval = document["approval"]
        if args.json:
            print(json.dumps(document, indent=2))
        else:
            print(f"{approval['status']} {approval['id']} ({approval['agent']} → {approval['tool']})")
        return EXIT_OK

    return _run("approvals", args, body)


def audit_command(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        params = {
            name: value
            for name, value in (
                ("since", args.since),
                ("until", args.until),
                ("agent", args.agent),
                ("tenant", args.tenant),
                ("kind", args.kind),
                ("limit", args.limit),
            )
            if value
        }
        document = client.call("GET", "/api/v1/control/audit", params=params)
        print(json.dumps(document, indent=2) if args.json else render_audit(document["audit"]))
        return EXIT_OK

    return _run("audit", args, body)


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collector", metavar="URL", help=f"a running collector (default {DEFAULT_COLLECTOR})")
    parser.add_argument("--token", help=f"bearer token, the control scope to change state (default: ${TOKEN_ENV})")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", help="this agent (with --tenant: only that tenant's runs of it)")
    parser.add_argument("--tenant", help="this tenant (a tenant's token may only name its own)")
    parser.add_argument("--all", action="store_true", help="every agent of every tenant (the global scope)")
    parser.add_argument("--by", help="who you are, for the audit trail (default: your login name)")


def add_control_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kill = commands.add_parser("kill", help="engage the kill switch on every replica: agents stop within seconds")
    _target_flags(kill)
    kill.add_argument("--reason", help="why (required to engage; goes into the audit trail)")
    kill.add_argument("--expires", help="release by itself after this long: 90s, 30m, 2h, 1d (default: never)")
    kill.add_argument("--list", action="store_true", help="show what is engaged")
    _connection_flags(kill)
    kill.set_defaults(handler=kill_command)

    unkill = commands.add_parser("unkill", help="release a kill-switch scope engaged with agentwatch kill")
    _target_flags(unkill)
    unkill.add_argument("--reason", help="why (goes into the audit trail)")
    _connection_flags(unkill)
    unkill.set_defaults(handler=unkill_command)

    approvals = commands.add_parser("approvals", help="list, approve or reject tool calls waiting for a person")
    approvals.add_argument("action", nargs="?", choices=("list", "approve", "reject"), help="default: list")
    approvals.add_argument("id", nargs="?", metavar="ID", help="the approval to decide")
    approvals.add_argument(
        "--status", default="pending", choices=("pending", "approved", "rejected", "all"), help="list filter"
    )
    approvals.add_argument("--reason", help="why (required to reject)")
    approvals.add_argument("--by", help="who you are, for the audit trail (default: your login name)")
    _connection_flags(approvals)
    approvals.set_defaults(handler=approvals_command)

    audit = commands.add_parser("audit", help="who pulled which switch, who approved what, which calls were denied")
    audit.add_argument("--since", help="at or after: 15m, 24h, 7d or ISO-8601")
    audit.add_argument("--until", help="before: 15m, 2h or ISO-8601")
    audit.add_argument("--agent", help="only this agent")
    audit.add_argument("--tenant", help="only this tenant (a tenant's token is always confined to its own)")
    audit.add_argument("--kind", help="killswitch, approval, policy, or a full kind like approval.approved")
    audit.add_argument("--limit", help="at most this many entries (default 200)")
    _connection_flags(audit)
    audit.set_defaults(handler=audit_command)


__all__ = ["ControlClient", "ControlError", "add_control_commands"]
