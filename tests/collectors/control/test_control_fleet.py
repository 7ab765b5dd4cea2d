"""The control plane with real processes: a collector, agent processes on RemoteKillSwitch, the CLI.

``agentwatch kill`` stops the agents' next tool call; a collector restart keeps the state; an
unreachable collector fails closed (writes refused, reads allowed); a tenant's token cannot kill
or approve for another tenant; an approval filed by one process is decided from the CLI and the
tool runs exactly once; every change is in ``agentwatch audit``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _collector_proc import CollectorProcess
from _paths import REPO

pytestmark = pytest.mark.integration  # real collector and agent processes

AGENT_SCRIPT = REPO / "tests" / "support" / "control_agent.py"
TOKENS = """
tokens:
  - {token: oncall-secret, scopes: [control], name: oncall}
  - {token: acme-agent, tenant: acme, scopes: [ingest]}
  - {token: acme-ops, tenant: acme, scopes: [control, read], name: acme-ops}
  - {token: globex-agent, tenant: globex, scopes: [ingest]}
  - {token: globex-ops, tenant: globex, scopes: [control, read], name: globex-ops}
"""


def cli(collector: CollectorProcess, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agentwatch.collectors.cli.main",
            *args,
            "--collector",
            collector.base_url,
            "--token",
            token,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Agent:
    def __init__(self, collector: CollectorProcess, workdir: Path, name: str, tenant: str, token: str) -> None:
        self.out = workdir / f"agent-{name}-{tenant}.txt"
        self.err = (workdir / f"agent-{name}-{tenant}.err").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(AGENT_SCRIPT),
                "loop",
                "--collector",
                collector.base_url,
                "--token",
                token,
                "--agent",
                name,
                "--tenant",
                tenant,
                "--out",
                str(self.out),
                "--stale-after",
                "3",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
        )

    def lines(self, since: float = 0.0) -> list[tuple[float, str, str]]:
        if not self.out.exists():
            return []
        rows = []
        for line in self.out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and float(parts[0]) >= since:
                rows.append((float(parts[0]), parts[1], parts[2]))
        return rows

    def wait_for(self, tool: str, status: str, *, since: float, timeout_s: float = 15.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, seen_tool, seen in self.lines(since):
                if seen_tool == tool and seen == status:
                    return at
            time.sleep(0.05)
        raise AssertionError(f"{self.out.name}: no {tool} {status} since {since}: {self.lines(since)[-6:]}")

    def latest(self, tool: str) -> str:
        rows = [status for _, seen_tool, status in self.lines() if seen_tool == tool]
        return rows[-1] if rows else ""

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self.err.close()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    (tmp_path / "tokens.yaml").write_text(TOKENS)
    process = CollectorProcess(tmp_path / "collector", extra_args=["--tokens", str(tmp_path / "tokens.yaml")])
    process.start()
    yield process
    process.stop()


@pytest.fixture
def agents(collector: CollectorProcess, tmp_path: Path) -> Iterator[Callable[[str, str, str], Agent]]:
    started: list[Agent] = []

    def start(name: str, tenant: str, token: str) -> Agent:
        agent = Agent(collector, tmp_path, name, tenant, token)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def test_kill_stops_the_next_tool_call_survives_a_restart_and_fails_closed(
    collector: CollectorProcess, agents: Callable[[str, str, str], Agent]
) -> None:
    acme_support = agents("support", "acme", "acme-agent")
    globex_support = agents("support", "globex", "globex-agent")
    acme_billing = agents("billing", "acme", "acme-agent")
    fleet = (acme_support, globex_support, acme_billing)
    for agent in fleet:
        agent.wait_for("ticket.create", "ok", since=0)

    # one agent of one tenant: only that agent stops, within seconds
    engaged_at = time.time()
    done = cli(collector, "oncall-secret", "kill", "--agent", "support", "--tenant", "acme", "--reason", "injection")
    assert done.returncode == 0, done.stderr
    answered_at = time.time()  # the command's own start-up (a Python interpreter) is not the switch's latency
    killed_at = acme_support.wait_for("ticket.create", "killed", since=engaged_at)
    assert killed_at - answered_at < 2.0
    assert acme_support.wait_for("kb.search", "killed", since=engaged_at)
    for other in (globex_support, acme_billing):
        other.wait_for("ticket.create", "ok", since=killed_at)

    # the agent everywhere, with an expiry
    done = cli(collector, "oncall-secret", "kill", "--agent", "billing", "--reason", "bad deploy", "--expires", "1h")
    assert done.returncode == 0, done.stderr
    acme_billing.wait_for("ticket.create", "killed", since=time.time() - 0.1)

    # the collector goes away: beyond the staleness bound writes are refused, reads go on
    collector.stop()
    gone = time.time()
    globex_support.wait_for("ticket.create", "unavailable", since=gone, timeout_s=15)
    globex_support.wait_for("kb.search", "ok", since=gone + 3.5)
    # an engaged scope never turns into "unavailable": the last known answer says killed until stale
    acme_support.wait_for("ticket.create", "unavailable", since=gone, timeout_s=15)

    # it comes back on the same store: the state is still there, the agents pick it up again
    collector.start()
    back = time.time()
    acme_support.wait_for("ticket.create", "killed", since=back, timeout_s=15)
    acme_billing.wait_for("ticket.create", "killed", since=back, timeout_s=15)
    globex_support.wait_for("ticket.create", "ok", since=back, timeout_s=15)
    listing = cli(collector, "oncall-secret", "kill", "--list", "--json")
    scopes = json.loads(listing.stdout)["scopes"]
    assert scopes == ["agent:billing", "agent:support/tenant:acme"]

    # release: the agent runs again
    done = cli(collector, "oncall-secret", "unkill", "--agent", "support", "--tenant", "acme", "--reason", "fixed")
    assert done.returncode == 0, done.stderr
    acme_support.wait_for("ticket.create", "ok", since=time.time(), timeout_s=10)

    audit = json.loads(cli(collector, "oncall-secret", "audit", "--kind", "killswitch", "--json").stdout)["audit"]
    assert [(row["kind"], row["scope"]) for row in reversed(audit)] == [
        ("killswitch.engaged", "agent:support/tenant:acme"),
        ("killswitch.engaged", "agent:billing"),
        ("killswitch.released", "agent:support/tenant:acme"),
    ]
    assert all(row["actor"].endswith("via oncall") for row in audit)
    assert audit[1]["details"]["expires_at"]


def test_a_tenant_token_only_touches_its_own_tenant(collector: CollectorProcess, tmp_path: Path) -> None:
    refused = cli(collector, "acme-ops", "kill", "--agent", "support", "--tenant", "globex", "--reason", "x")
    assert refused.returncode == 2
    assert "403" in refused.stderr
    assert "acme" in refused.stderr
    assert cli(collector, "acme-ops", "kill", "--all", "--reason", "x").returncode == 2
    assert cli(collector, "acme-ops", "kill", "--agent", "support", "--reason", "x").returncode == 2
    # an agent's ingest token reads the switch but cannot change it
    assert cli(collector, "acme-agent", "kill", "--list").returncode == 0
    assert cli(collector, "acme-agent", "kill", "--agent", "a", "--tenant", "acme", "--reason", "x").returncode == 2

    # globex files an approval; acme can neither see nor decide it
    out = tmp_path / "approval.txt"
    agent = subprocess.Popen(
        [
            sys.executable,
            str(AGENT_SCRIPT),
            "approve",
            "--collector",
            collector.base_url,
            "--token",
            "globex-agent",
            "--tenant",
            "globex",
            "--out",
            str(out),
        ]
    )
    try:
        pending = wait_pending(collector, "globex-ops")
        assert json.loads(cli(collector, "acme-ops", "approvals", "--json").stdout)["approvals"] == []
        denied = cli(collector, "acme-ops", "approvals", "approve", str(pending["id"]))
        assert denied.returncode == 1
        assert "404" in denied.stderr
        rejected = cli(collector, "globex-ops", "approvals", "reject", str(pending["id"]), "--reason", "not now")
        assert rejected.returncode == 0, rejected.stderr
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
        agent.wait(timeout=10)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("rejected")
    assert "not now" in lines[0]
    assert lines[1] == "calls 0"


def wait_pending(collector: CollectorProcess, token: str, timeout_s: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = cli(collector, token, "approvals", "--json")
        assert done.returncode == 0, done.stderr
        approvals = json.loads(done.stdout)["approvals"]
        if approvals:
            found: dict[str, object] = approvals[0]
            return found
        time.sleep(0.1)
    raise AssertionError("no pending approval appeared")


def test_an_approval_decided_from_the_cli_runs_the_tool_exactly_once(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    out = tmp_path / "approval.txt"
    agent = subprocess.Popen(
        [
            sys.executable,
            str(AGENT_SCRIPT),
            "approve",
            "--collector",
            collector.base_url,
            "--token",
            "acme-agent",
            "--tenant",
            "acme",
            "--out",
            str(out),
        ]
    )
    try:
        pending = wait_pending(collector, "acme-ops")
        assert pending["tool"] == "refund.issue"
        assert pending["tenant"] == "acme"
        assert pending["arguments"] == {"amount": 42}
        done = cli(collector, "acme-ops", "approvals", "approve", str(pending["id"]), "--by", "alice")
        assert done.returncode == 0, done.stderr
        again = cli(collector, "acme-ops", "approvals", "approve", str(pending["id"]))
        assert again.returncode == 1
        assert "already approved" in again.stderr
        assert agent.wait(timeout=30) == 0
    finally:
        agent.kill()
        agent.wait(timeout=10)
    ran, calls = out.read_text().splitlines()
    assert ran.startswith("ran ")
    assert len(ran) > len("ran ") + 10
    assert calls == "calls 1"
    audit = json.loads(cli(collector, "acme-ops", "audit", "--kind", "approval", "--json").stdout)["audit"]
    assert [(row["kind"], row["actor"]) for row in reversed(audit)] == [
        ("approval.requested", "token:" + audit[-1]["actor"].removeprefix("token:")),
        ("approval.approved", "alice via acme-ops"),
    ]
