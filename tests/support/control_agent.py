"""An agent process for the control-plane tests and benchmark: a ToolGateway on a RemoteKillSwitch.

``loop`` mode: one run after another, each calling a write tool (``ticket.create``) and a read tool
(``kb.search``), appending one line per call to ``--out``: ``<unix time> <tool> <status>`` where status
is ``ok``, ``killed`` (the switch is engaged) or ``unavailable`` (fail-closed: the collector is
unreachable beyond the staleness bound). ``approve`` mode: one call of ``refund.issue`` (requires
approval) through a RemoteApprover; prints ``ran <token>`` or ``rejected <reason>`` and how many
times the tool ran.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from agentwatch.instrumentation import (
    KillSwitchEngaged,
    Policy,
    RemoteApprover,
    RemoteKillSwitch,
    ToolDenied,
    ToolGateway,
    agent_run,
)
from agentwatch.instrumentation.errors import ApprovalRejected


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("loop", "approve"))
    parser.add_argument("--collector", required=True)
    parser.add_argument("--token")
    parser.add_argument("--agent", default="support")
    parser.add_argument("--tenant")
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--stale-after", type=float, default=3.0)
    parser.add_argument("--wait", type=float, default=20.0)
    args = parser.parse_args()
    out = Path(args.out)
    ran: list[str | None] = []

    def create(title: str = "") -> str:
        return "created"

    def search(query: str = "") -> str:
        return "found"

    def refund(amount: int = 0, approval_token: str | None = None) -> str:
        ran.append(approval_token)
        return "refunded"

    switch = RemoteKillSwitch(args.collector, args.token, stale_after=args.stale_after, wait=args.wait)
    gateway = ToolGateway(
        policy=Policy(
            allow=["kb.search", "ticket.create", "refund.issue"],
            writes=["ticket.create"],
            require_approval=["refund.issue"],
        ),
        tools={"ticket.create": create, "kb.search": search, "refund.issue": refund},
        kill_switch=[switch],
        approver=RemoteApprover(args.collector, args.token, timeout=60.0, poll_wait=5.0),
        approval_timeout=60.0,
    )
    if args.mode == "approve":
        with agent_run(args.agent, tenant_id=args.tenant, gateway=gateway) as run:
            try:
                run.call_tool("refund.issue", {"amount": 42})
                line = f"ran {ran[0]}"
            except ApprovalRejected as exc:
                line = f"rejected {exc}"
        with out.open("a") as handle:
            handle.write(f"{line}\ncalls {len(ran)}\n")
        return 0
    with out.open("a", buffering=1) as handle:
        handle.write(f"{time.time():.3f} start ready\n")
        while True:
            for tool, arguments in (("ticket.create", {"title": "t"}), ("kb.search", {"query": "q"})):
                with agent_run(args.agent, tenant_id=args.tenant, gateway=gateway) as run:
                    try:
                        run.call_tool(tool, arguments)
                        status = "ok"
                    except KillSwitchEngaged:
                        status = "killed"
                    except ToolDenied as exc:
                        status = "unavailable" if exc.rule == "kill_switch_unavailable" else f"denied:{exc.rule}"
                    handle.write(f"{time.time():.3f} {tool} {status}\n")
            time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
