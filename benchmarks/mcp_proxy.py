"""What governing MCP tools costs: ``agentwatch mcp-proxy`` on loopback, and the in-process gateway.

1. **Proxy**: the ``mcp`` SDK's client calls a tool of a FastMCP server over Streamable HTTP on
   127.0.0.1, directly and through the proxy (its own process, the policy allowing the tool, one
   run per session with its budget, spans into a batch processor whose exporter drops them, so
   the figure is the proxy's work, not an export). Sequential ``tools/call`` requests after a
   warm-up; p50 and p99 per call, and what the proxy adds (target: under 1 ms at p50).
2. **In process**: the same client and server connected in memory (no transport), a call
   through ``ClientSession.call_tool`` without and with agentwatch's MCP governance (inside a
   run, the ``tools/call`` span, policy, budget and kill switch checks, trace context in
   ``_meta``).
3. **The gateway alone**: the same governed call path around a send that returns at once, best
   of five rounds: the figure least disturbed by a busy machine.

Run with ``python benchmarks/mcp_proxy.py [--calls N] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.fastmcp import FastMCP
from mcp.shared.memory import create_connected_server_and_client_session
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from agentwatch.instrumentation import InstrumentationSettings, Policy, ToolGateway, agent_run
from agentwatch.instrumentation.integrations import mcp as aw_mcp

UPSTREAM = """
import sys
from mcp.server.fastmcp import FastMCP
app = FastMCP("bench", host="127.0.0.1", port=int(sys.argv[1]), log_level="WARNING")
@app.tool()
def lookup(order_id: str) -> str:
    return "order " + order_id + ": shipped"
app.run(transport="streamable-http")
"""

PROXY = """
import sys, anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from agentwatch.instrumentation import InstrumentationSettings, load_config
from agentwatch.instrumentation.integrations.mcp.proxy import McpProxy

class Dropping(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(Dropping()))
proxy = McpProxy(load_config(sys.argv[1]), tracer_provider=provider, settings=InstrumentationSettings())
anyio.run(proxy.serve_http)
"""


class DroppingExporter(SpanExporter):
    """Accepts and forgets spans: measures the instrumentation, not a network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): what the proxy spends, whatever the machine's load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def process(code: str, *args: str, port: int) -> Iterator[int]:
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"a benchmark server exited with {child.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {port}")
            time.sleep(0.05)
        yield child.pid
    finally:
        child.terminate()
        child.wait(timeout=10)


@contextlib.asynccontextmanager
async def http_session(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers) as client,
        streamable_http_client(url, http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def timed(call: Callable[[], Awaitable[Any]], calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": statistics.median(ordered),
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "mean_us": statistics.fmean(ordered),
    }


async def proxy_figures(calls: int, warmup: int) -> dict[str, Any]:
    upstream_port, proxy_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
    config = {
        "budgets": {"max_tool_calls": calls * 4},
        "tools": {"allow": ["bench.lookup"]},
        "logging": {"tool_calls": False, "stop_reasons": False},
        "kill_switch": {"env": "AGENTWATCH_BENCH_KILL_SWITCH"},
        "mcp": {
            "listen": {"host": "127.0.0.1", "port": proxy_port},
            "tokens": {"bench-token": "bench"},
            "upstreams": {"bench": {"url": upstream_url}},
        },
    }
    with tempfile.TemporaryDirectory() as folder:
        config_file = Path(folder) / "agentwatch.json"
        config_file.write_text(json.dumps(config))
        with (
            process(UPSTREAM, str(upstream_port), port=upstream_port),
            process(PROXY, str(config_file), port=proxy_port) as proxy_pid,
        ):
            async with http_session(upstream_url) as direct:
                direct_samples = await timed(lambda: direct.call_tool("lookup", {"order_id": "1"}), calls, warmup)
            async with http_session(f"http://127.0.0.1:{proxy_port}/mcp", "bench-token") as proxied:
                for _ in range(warmup):
                    await proxied.call_tool("bench.lookup", {"order_id": "1"})
                cpu_before = cpu_seconds(proxy_pid)
                proxy_samples = await timed(lambda: proxied.call_tool("bench.lookup", {"order_id": "1"}), calls, 0)
                proxy_cpu_us = (cpu_seconds(proxy_pid) - cpu_before) / calls * 1e6
    direct_p, proxy_p = percentiles(direct_samples), percentiles(proxy_samples)
    return {
        "direct": direct_p,
        "proxy": proxy_p,
        "added_p50_us": proxy_p["p50_us"] - direct_p["p50_us"],
        "added_p99_us": proxy_p["p99_us"] - direct_p["p99_us"],
        "proxy_cpu_us_per_call": proxy_cpu_us,
    }


async def in_process_figures(calls: int, warmup: int) -> dict[str, Any]:
    app = FastMCP("bench", log_level="WARNING")

    @app.tool()
    def lookup(order_id: str) -> str:
        return f"order {order_id}: shipped"

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    settings = InstrumentationSettings(audit_tool_calls=False, audit_stop_reasons=False)
    gateway = ToolGateway(
        policy=Policy(allow=["bench.*"]), tools={}, kill_switch=False, tracer_provider=provider, settings=settings
    )
    figures: dict[str, Any] = {}
    async with create_connected_server_and_client_session(app._mcp_server) as session:
        aw_mcp.govern_session(session, server_name="bench")
        cpu = time.process_time()
        plain = await timed(lambda: session.call_tool("lookup", {"order_id": "1"}), calls, warmup)
        plain_cpu = (time.process_time() - cpu) / (calls + warmup) * 1e6
        aw_mcp.instrument(gateway=gateway)
        try:
            async with agent_run("bench", gateway=gateway, tracer_provider=provider, settings=settings):
                cpu = time.process_time()
                governed = await timed(lambda: session.call_tool("lookup", {"order_id": "1"}), calls, warmup)
                governed_cpu = (time.process_time() - cpu) / (calls + warmup) * 1e6
        finally:
            aw_mcp.uninstrument()
    provider.shutdown()
    figures["plain"], figures["governed"] = percentiles(plain), percentiles(governed)
    figures["added_p50_us"] = figures["governed"]["p50_us"] - figures["plain"]["p50_us"]
    figures["added_cpu_us_per_call"] = governed_cpu - plain_cpu
    return figures


async def gateway_figures(calls: int) -> dict[str, float]:
    """The gateway's own cost on one MCP call, no transport: the call path of ``ClientSession.call_tool``
    (a run, policy, budget, the ``tools/call`` span, ``_meta`` trace context) around a send that returns at once."""
    from mcp import types

    from agentwatch.instrumentation.integrations.mcp import _core

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    settings = InstrumentationSettings(audit_tool_calls=False, audit_stop_reasons=False)
    gateway = ToolGateway(
        policy=Policy(allow=["bench.*"]), tools={}, kill_switch=False, tracer_provider=provider, settings=settings
    )
    answer = types.CallToolResult(content=[types.TextContent(type="text", text="shipped")])

    async def send(**arguments: Any) -> Any:
        _core.with_trace_context(None)
        return answer

    def refused(text: str) -> Any:
        return answer

    async def governed() -> Any:
        attributes = _core.span_attributes(server="bench", tool="lookup", protocol_version="2025-06-18")
        return await _core.governed_call(
            server="bench",
            tool="lookup",
            arguments={"order_id": "1"},
            send=send,
            refused=refused,
            attributes=attributes,
        )

    async def direct() -> Any:
        return await send(order_id="1")

    figures: dict[str, float] = {}
    async with agent_run("bench", gateway=gateway, tracer_provider=provider, settings=settings):
        for name, call in (("direct", direct), ("governed", governed)):
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(calls):
                    await call()
                best = min(best, (time.perf_counter() - start) / calls * 1e6)
            figures[f"{name}_us"] = best
    provider.shutdown()
    figures["added_us"] = figures["governed_us"] - figures["direct_us"]
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="measured tools/call requests per mode")
    parser.add_argument("--warmup", type=int, default=200, help="calls before measuring")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    report = {
        "calls": args.calls,
        "proxy": asyncio.run(proxy_figures(args.calls, args.warmup)),
        "in_process": asyncio.run(in_process_figures(args.calls, args.warmup)),
        "gateway": asyncio.run(gateway_figures(args.calls)),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    proxy, local = report["proxy"], report["in_process"]
    print(f"MCP tools/call latency, {args.calls} sequential calls per mode (microseconds)")
    rows = [
        ("direct (Streamable HTTP, loopback)", proxy["direct"]),
        ("through agentwatch mcp-proxy", proxy["proxy"]),
        ("in memory, not governed", local["plain"]),
        ("in memory, through the gateway", local["governed"]),
    ]
    print(f"  {'':<34} {'p50':>9} {'p99':>9}")
    for label, figures in rows:
        print(f"  {label:<34} {figures['p50_us']:9.0f} {figures['p99_us']:9.0f}")
    print(f"  {'added by the proxy':<34} {proxy['added_p50_us']:9.0f} {proxy['added_p99_us']:9.0f}")
    print(f"  {'added by the in-process gateway':<34} {local['added_p50_us']:9.0f}")
    print(f"  CPU per call: the proxy process {proxy['proxy_cpu_us_per_call']:.0f} us (all its work, HTTP both ways);")
    print(f"  the in-process gateway adds {local['added_cpu_us_per_call']:.0f} us of CPU to an in-memory call")
    gate = report["gateway"]
    print(f"  the gateway's own work on an MCP call, no transport (best of 5): {gate['added_us']:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
