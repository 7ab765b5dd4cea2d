"""agentwatch collectors: the command line, the demo, and (with the ``collector`` extra) the service.

Heavy dependencies (ClickHouse clients, Prometheus, gRPC) are imported only by the commands that
need them, so ``agentwatch demo`` and ``agentwatch --help`` work on the base install.
"""

from __future__ import annotations

__all__: list[str] = []
