"""The OTLP/gRPC receiver: ``TraceService/Export`` served by grpcio over the same pipeline as HTTP.

The handler takes the request as raw bytes (no grpcio deserializer), so the same parser, limits
and request digest apply to both transports. HTTP-style outcomes map onto the gRPC codes the OTLP
spec prescribes: bad data → INVALID_ARGUMENT (not retried), backpressure → UNAVAILABLE (retried).
"""

from __future__ import annotations

from concurrent import futures

import grpc

from agentwatch.collectors.ingest.pipeline import PROTOBUF, Pipeline

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _identity(data: bytes) -> bytes:
    return data


def start_grpc_server(
    pipeline: Pipeline, address: str, *, max_body_bytes: int, workers: int = 16
) -> tuple[grpc.Server, int]:
    """Start serving on ``address`` (HOST:PORT, port 0 = any); returns the server and the bound port."""

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        reply = pipeline.export(
            body=request,
            content_type=PROTOBUF,
            content_encoding=None,  # grpcio already inflated a compressed message, within the size cap
            authorization=metadata.get("authorization"),
            transport="grpc",
        )
        if reply.status != 200:
            if "Retry-After" in reply.headers:
                context.set_trailing_metadata((("retry-after", reply.headers["Retry-After"]),))
            context.abort(_CODES.get(reply.status, grpc.StatusCode.INTERNAL), reply.message or "rejected")
        return reply.body

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agentwatch-grpc"),
        handlers=[handler],
        options=(
            ("grpc.max_receive_message_length", max_body_bytes),
            ("grpc.max_send_message_length", 4 << 20),
        ),
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio >= 1.x raises instead of returning 0
        port = 0
    if port == 0:
        # the collector checked the address before opening its store (check_bindable); only a
        # process that took the port since then, or an address grpcio cannot parse, ends here
        server.stop(grace=None)
        raise OSError(
            f"--otlp-grpc {address} cannot be listened on (in use, or not an address of this host); "
            "choose another with --otlp-grpc HOST:PORT"
        )
    server.start()
    return server, port
