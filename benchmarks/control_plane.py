"""The control plane under load: how fast `agentwatch kill` stops a fleet, what the check costs, approvals.

A real collector (embedded store, loopback, no tokens) and 50 agent workers, 10 threads in each of 5
processes, every worker with its own ``RemoteKillSwitch`` (its own long-poll connection) and
``ToolGateway``, calling a write tool every 100 ms. Each round runs ``agentwatch kill --all`` as a
command, records when every worker first refused a call, then ``agentwatch unkill --all`` and waits
for every worker to run again.

- kill → every worker refusing: p50/p99 over rounds of the slowest worker, and over all workers,
  measured from the command's start (what an operator sees, including the CLI's interpreter
  start-up) and from its answer (the switch's own propagation); target p99 < 2 s;
- the switch check on the tool-call path: ``ToolGateway.call`` of a no-op tool without a kill switch,
  with the environment switch (the default) and with a ``RemoteKillSwitch`` (cached state, no network);
- the approval round trip: ``RemoteApprover`` files a request, another thread approves it over HTTP
  as soon as it is listed, and the approver returns the decision.

Run with ``python benchmarks/control_plane.py [--workers 50] [--rounds 10] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from agentwatch.instrumentation import (
    ApprovalRequest,
    EnvKillSwitch,
    KillSwitchEngaged,
    Policy,
    RemoteApprover,
    RemoteKillSwitch,
    ToolDenied,
    ToolGateway,
    agent_run,
)

PER_PROCESS = 10
# each worker calls its tool every 100 ms: 500 calls a second over the fleet, on a 2-core host too
INTERVAL_S = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_process(url: str, first: int, count: int, out: Path) -> None:
    """``count`` workers in threads; each line of ``out``: ``<worker> <unix time> ok|killed`` on a change."""
    lock = threading.Lock()
    handle = out.open("a", buffering=1)

    def worker(index: int) -> None:
        switch = RemoteKillSwitch(url, stale_after=10.0, wait=3.0)
        gateway = ToolGateway(
            policy=Policy(allow=["ticket.create"]), tools={"ticket.create": lambda: "ok"}, kill_switch=[switch]
        )
        last = ""
        while True:
            with agent_run("support", tenant_id=f"t{index % 5}", gateway=gateway) as run:
                try:
                    run.call_tool("ticket.create", {})
                    status = "ok"
                except (KillSwitchEngaged, ToolDenied):
                    status = "killed"
            if status != last:
                with lock:
                    handle.write(f"{index} {time.time():.4f} {status}\n")
                last = status
            time.sleep(INTERVAL_S)

    for index in range(first, first + count):
        threading.Thread(target=worker, args=(index,), daemon=True).start()
    while True:
        time.sleep(3600)


def states(out: Path) -> dict[int, list[tuple[float, str]]]:
    found: dict[int, list[tuple[float, str]]] = {}
    for line in out.read_text().splitlines() if out.exists() else []:
        worker, at, status = line.split()
        found.setdefault(int(worker), []).append((float(at), status))
    return found


def wait_all(out: Path, workers: int, status: str, since: float, timeout_s: float = 30.0) -> dict[int, float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        firsts = {}
        for worker, events in states(out).items():
            hits = [at for at, seen in events if seen == status and at >= since]
            if hits:
                firsts[worker] = min(hits)
        if len(firsts) == workers:
            return firsts
        time.sleep(0.02)
    raise TimeoutError(f"only {len(firsts)}/{workers} workers reached {status}")


def cli(url: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "agentwatch.collectors.cli.main", *args, "--collector", url],
        check=True,
        capture_output=True,
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def kill_rounds(url: str, workdir: Path, workers: int, rounds: int) -> dict[str, Any]:
    out = workdir / "workers.txt"
    processes = []
    for first in range(0, workers, PER_PROCESS):
        count = min(PER_PROCESS, workers - first)
        processes.append(
            subprocess.Popen([sys.executable, __file__, "--worker", url, str(first), str(count), str(out)])
        )
    try:
        wait_all(out, workers, "ok", 0, timeout_s=60)
        slowest_from_start: list[float] = []
        slowest_from_answer: list[float] = []
        all_from_answer: list[float] = []
        for _ in range(rounds):
            started = time.time()
            cli(url, "kill", "--all", "--reason", "benchmark")
            answered = time.time()
            firsts = wait_all(out, workers, "killed", started)
            slowest_from_start.append(max(firsts.values()) - started)
            slowest_from_answer.append(max(firsts.values()) - answered)
            all_from_answer.extend(max(0.0, at - answered) for at in firsts.values())
            released = time.time()
            cli(url, "unkill", "--all", "--reason", "benchmark")
            wait_all(out, workers, "ok", released)
            time.sleep(0.5)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    return {
        "workers": workers,
        "rounds": rounds,
        "every_worker_from_command_start_s": {
            "p50": pct(slowest_from_start, 0.5),
            "p99": pct(slowest_from_start, 0.99),
        },
        "every_worker_from_command_answer_s": {
            "p50": pct(slowest_from_answer, 0.5),
            "p99": pct(slowest_from_answer, 0.99),
        },
        "each_worker_from_command_answer_s": {"p50": pct(all_from_answer, 0.5), "p99": pct(all_from_answer, 0.99)},
    }


def check_cost(url: str, calls: int) -> dict[str, float]:
    remote = RemoteKillSwitch(url)
    modes: dict[str, Any] = {"no kill switch": False, "env (default)": None, "remote": [remote]}
    gateways = {
        name: ToolGateway(policy=Policy(allow=["noop"]), tools={"noop": lambda: None}, kill_switch=spec)
        for name, spec in modes.items()
    }
    results = dict.fromkeys(modes, float("inf"))
    for _ in range(7):  # round-robin, best of 7: the modes see the same machine
        for name, gateway in gateways.items():
            with agent_run("bench", gateway=gateway) as run:
                started = time.perf_counter()
                for _ in range(calls):
                    run.call_tool("noop", {})
                results[name] = min(results[name], (time.perf_counter() - started) / calls * 1e6)
    switch_only = {}
    for name, source in (("env", EnvKillSwitch()), ("remote", remote)):
        started = time.perf_counter()
        for _ in range(100_000):
            source.engaged_scopes()
        switch_only[name] = (time.perf_counter() - started) / 100_000 * 1e9
    remote.close()
    return {
        **{f"tool_call_us[{name}]": round(value, 2) for name, value in results.items()},
        **{f"engaged_scopes_ns[{name}]": round(value, 1) for name, value in switch_only.items()},
    }


def approval_round_trips(url: str, count: int) -> dict[str, float]:
    approver = RemoteApprover(url, timeout=30.0, poll_wait=10.0)
    times = []
    for index in range(count):
        request = ApprovalRequest("refund.issue", {"amount": index}, "support", None, "acme", None, "require_approval")

        def decide() -> None:
            while True:
                with urllib.request.urlopen(f"{url}/api/v1/control/approvals?status=pending", timeout=10) as response:
                    pending = json.loads(response.read())["approvals"]
                if pending:
                    approve = urllib.request.Request(
                        f"{url}/api/v1/control/approvals/{pending[0]['id']}/approve", data=b"{}", method="POST"
                    )
                    urllib.request.urlopen(approve, timeout=10).close()
                    return
                time.sleep(0.01)

        decider = threading.Thread(target=decide)
        started = time.perf_counter()
        decider.start()
        decision = approver.approve(request)
        times.append(time.perf_counter() - started)
        decider.join()
        assert decision.approved
        assert decision.token
    return {"approval_round_trip_s_p50": pct(times, 0.5), "approval_round_trip_s_max": max(times)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--approvals", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentwatch-control-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (workdir / "collector.log").open("wb")
        collector = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentwatch.collectors.cli.main",
                "collector",
                "--clickhouse",
                f"chdb://{workdir / 'ch'}",
                "--spool",
                str(workdir / "spool"),
                "--otlp-http",
                f"127.0.0.1:{port}",
                "--otlp-grpc",
                "",
                "--metrics",
                "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            result: dict[str, Any] = {"kill": kill_rounds(url, workdir, args.workers, args.rounds)}
            result["check"] = check_cost(url, args.calls)
            result["approvals"] = approval_round_trips(url, args.approvals)
        finally:
            collector.terminate()
            collector.wait(timeout=60)
            log.close()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    kill = result["kill"]
    print(f"kill switch, {kill['workers']} workers ({PER_PROCESS} threads per process), {kill['rounds']} rounds")
    for key in (
        "every_worker_from_command_start_s",
        "every_worker_from_command_answer_s",
        "each_worker_from_command_answer_s",
    ):
        print(f"  {key:<40} p50 {kill[key]['p50']:.3f} s   p99 {kill[key]['p99']:.3f} s")
    print("switch check on the tool-call path")
    for key, value in result["check"].items():
        print(f"  {key:<40} {value}")
    print("approvals")
    for key, value in result["approvals"].items():
        print(f"  {key:<40} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
