"""ClickHouse storage: the client (embedded chDB or a server), the schema and its migrations, the
durable spool and the writer that drains it.
"""

from __future__ import annotations

__all__: list[str] = []
