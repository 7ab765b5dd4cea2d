"""The command line of the proxy: ``agentwatch mcp-proxy`` and ``python -m ...mcp.proxy``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agentwatch.instrumentation.integrations.mcp.proxy._server import McpProxy
from agentwatch.instrumentation.integrations.mcp.proxy._settings import proxy_settings


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="an MCP server fronting upstream MCP servers, every tool call through the gateway"
    )
    parser.add_argument("--config", required=True, help="agentwatch YAML/JSON config with an mcp section")
    parser.add_argument(
        "--stdio", action="store_true", help="serve one client over stdin/stdout (else Streamable HTTP)"
    )
    parser.add_argument("--host", help="listen host (default: mcp.listen.host)")
    parser.add_argument("--port", type=int, help="listen port (default: mcp.listen.port)")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "agentwatch mcp-proxy") -> int:
    import anyio

    from agentwatch.instrumentation import ConfigError, configure, load_config

    options = _parser(prog).parse_args(argv)
    try:
        config = load_config(options.config)
        proxy_config = proxy_settings(config)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    provider = configure(config=config)
    proxy = McpProxy(config)
    stdio = options.stdio or proxy_config.listen.transport == "stdio"
    try:
        if stdio:
            anyio.run(proxy.serve_stdio)
        else:
            anyio.run(lambda: proxy.serve_http(host=options.host, port=options.port))
    except KeyboardInterrupt:
        pass
    finally:
        proxy.close()
        shutdown = getattr(provider, "shutdown", None)
        if callable(shutdown):
            shutdown()
    return 0
