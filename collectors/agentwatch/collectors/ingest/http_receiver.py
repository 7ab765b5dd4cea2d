"""The OTLP/HTTP receiver as an ASGI app: ``/v1/traces``, ``/healthz``, ``/readyz`` and the read API.

The body is read with a hard cap before anything else happens, and the CPU/fsync work of an export
runs in a worker thread so one slow request never stalls the event loop. Exports have threads of
their own (``ingest_threads``), apart from the pool the read API uses: a flood of exports waiting
for the pipeline's decode slots queues on the event loop and never takes a thread a read needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial

import anyio.to_thread
from anyio import CapacityLimiter
from google.rpc.status_pb2 import Status
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from agentwatch.collectors.ingest.pipeline import PROTOBUF, Pipeline, media_type


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise _BodyTooLarge
    return bytes(chunks)


def create_app(
    *,
    pipeline: Pipeline,
    max_body_bytes: int,
    is_ready: Callable[[], tuple[bool, str]],
    extra_routes: Sequence[BaseRoute] = (),
    ingest_threads: int = 8,
) -> Starlette:
    """Build the receiver; ``is_ready`` reports (ready, reason) for /readyz."""
    limiter: CapacityLimiter | None = None

    async def export_traces(request: Request) -> Response:
        try:
            body = await _read_body(request, max_body_bytes)
        except _BodyTooLarge:
            kind = media_type(request.headers.get("content-type")) or PROTOBUF
            # the OTLP spec wants a google.rpc.Status body on every 4xx, in the request's encoding
            message = f"body exceeds the {max_body_bytes}-byte limit"
            body = (
                json.dumps({"code": 3, "message": message}).encode()
                if kind != PROTOBUF
                else Status(code=3, message=message).SerializeToString()
            )
            return Response(body, status_code=413, media_type=kind)
        nonlocal limiter
        if limiter is None:  # created on the server's event loop, on first use
            limiter = CapacityLimiter(ingest_threads)
        export = partial(
            pipeline.export,
            body=body,
            content_type=request.headers.get("content-type"),
            content_encoding=request.headers.get("content-encoding"),
            authorization=request.headers.get("authorization"),
            transport="http",
        )
        reply = await anyio.to_thread.run_sync(export, limiter=limiter)
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        ready, reason = is_ready()
        return JSONResponse({"ready": ready, "reason": reason}, status_code=200 if ready else 503)

    routes: list[BaseRoute] = [
        Route("/v1/traces", export_traces, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *extra_routes,
    ]
    return Starlette(routes=routes)
