"""OTLP in: bounded decompression, decoding and conversion to rows, the pipeline to the spool, and
the HTTP and gRPC receivers.
"""

from __future__ import annotations

__all__: list[str] = []
