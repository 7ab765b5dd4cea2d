"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests: scripted answers, exact usage, no network.

``POST /v1/chat/completions`` (plain and ``stream=True`` server-sent events) and ``POST /v1/responses``
(plain and streamed) answer from one shared script: each request takes the next ``StubTurn``, which
is either a tool call (``call("lookup", {"order": "1234"})``) or a final text (``say("Shipped.")``).
Usage is deterministic: the n-th answer (1-based, across both endpoints) reports
``input_tokens = 11 * n``, ``output_tokens = 7 * n``, ``cached_input_tokens = 2 * n`` and
``reasoning_tokens = n`` unless the turn says otherwise, so tests can assert exact sums
(``script_usage(turns)``). A turn with ``error_status`` answers with an OpenAI-style error body
(use a 4xx status: the client retries 5xx). When the script is used up, the stub answers 500 with
``"script exhausted"``.

The real clients (``openai``, the Agents SDK's Responses model, LangChain's ``ChatOpenAI``) talk
to it with ``base_url=stub.base_url`` (``http://127.0.0.1:<port>/v1``) and any API key::

    with OpenAIStub([call("lookup", {"order": "1234"}), say("Shipped.")]) as stub:
        client = openai.OpenAI(base_url=stub.base_url, api_key="sk-stub")
        ...
        assert len(stub.requests) == 2
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class StubTurn:
    """One model answer: a tool call (``tool`` and ``arguments``) or a final ``text``; usage defaults from its index."""

    text: str | None = None
    tool: str | None = None
    arguments: JSON = field(default_factory=dict)
    call_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    error_status: int | None = None
    error_message: str = "scripted error"

    @property
    def is_tool_call(self) -> bool:
        return self.tool is not None


def call(
    tool: str,
    arguments: JSON | None = None,
    *,
    call_id: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
) -> StubTurn:
    """A turn where the model calls ``tool`` with ``arguments`` (JSON-encoded on the wire)."""
    return StubTurn(
        tool=tool,
        arguments=dict(arguments or {}),
        call_id=call_id,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def say(text: str, *, input_tokens: int | None = None, output_tokens: int | None = None) -> StubTurn:
    """A turn where the model answers ``text`` and stops."""
    return StubTurn(text=text, input_tokens=input_tokens, output_tokens=output_tokens)


def fail(status: int = 400, message: str = "scripted error") -> StubTurn:
    """A turn the server answers with an error (no usage is counted for it)."""
    return StubTurn(error_status=status, error_message=message)


@dataclass(frozen=True)
class TurnUsage:
    """The token numbers the stub reports for one answered turn."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def turn_usage(turn: StubTurn, index: int) -> TurnUsage:
    """The usage of ``turn`` answered as the ``index``-th (1-based) request."""
    return TurnUsage(
        input_tokens=turn.input_tokens if turn.input_tokens is not None else 11 * index,
        output_tokens=turn.output_tokens if turn.output_tokens is not None else 7 * index,
        cached_input_tokens=turn.cached_input_tokens if turn.cached_input_tokens is not None else 2 * index,
        reasoning_tokens=turn.reasoning_tokens if turn.reasoning_tokens is not None else index,
    )


def script_usage(turns: Sequence[StubTurn]) -> TurnUsage:
    """The summed usage of ``turns`` answered in order from index 1 (error turns count nothing)."""
    used = [turn_usage(t, i) for i, t in enumerate(turns, start=1) if t.error_status is None]
    return TurnUsage(
        input_tokens=sum(u.input_tokens for u in used),
        output_tokens=sum(u.output_tokens for u in used),
        cached_input_tokens=sum(u.cached_input_tokens for u in used),
        reasoning_tokens=sum(u.reasoning_tokens for u in used),
    )


@dataclass(frozen=True)
class StubRequest:
    """A request the stub received: its path, JSON body and the turn index it was answered with (0: none)."""

    path: str
    body: JSON
    index: int


class OpenAIStub:
    """The server; a context manager that starts it in a daemon thread and stops it on exit.

    ``response_model`` is the model name the answers carry (``None``: the requested one), e.g. a
    dated snapshot of the requested alias as the real API does.
    """

    def __init__(self, turns: Sequence[StubTurn] = (), *, response_model: str | None = None) -> None:
        self._turns = list(turns)
        self._lock = threading.Lock()
        self._next = 0
        self.response_model = response_model
        self.requests: list[StubRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What clients take as ``base_url``: ``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def answered(self) -> int:
        """How many turns of the script were used."""
        with self._lock:
            return self._next

    def __len__(self) -> int:
        """How many turns the script has (answered or not)."""
        with self._lock:
            return len(self._turns)

    def extend(self, turns: Sequence[StubTurn]) -> None:
        """Append turns to the script."""
        with self._lock:
            self._turns.extend(turns)

    def start(self) -> OpenAIStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def take(self, path: str, body: JSON) -> tuple[StubTurn | None, int]:
        """The next turn and its 1-based index (``None, 0`` when the script is used up)."""
        with self._lock:
            if self._next >= len(self._turns):
                self.requests.append(StubRequest(path, body, 0))
                return None, 0
            turn = self._turns[self._next]
            self._next += 1
            self.requests.append(StubRequest(path, body, self._next))
            return turn, self._next


# --- wire formats ---------------------------------------------------------------------------------


def _call_id(turn: StubTurn, index: int) -> str:
    return turn.call_id or f"call_{index:04d}"


def chat_completion(turn: StubTurn, index: int, model: str) -> JSON:
    """A ``chat.completion`` object for ``turn``."""
    usage = turn_usage(turn, index)
    message: JSON = {"role": "assistant", "content": turn.text, "refusal": None}
    if turn.is_tool_call:
        message["tool_calls"] = [
            {
                "id": _call_id(turn, index),
                "type": "function",
                "function": {"name": turn.tool, "arguments": json.dumps(turn.arguments)},
            }
        ]
    return {
        "id": f"chatcmpl-stub{index:04d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_stub",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if turn.is_tool_call else "stop",
            }
        ],
        "usage": _chat_usage(usage),
    }


def _chat_usage(usage: TurnUsage) -> JSON:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion_chunks(turn: StubTurn, index: int, model: str, *, include_usage: bool) -> Iterator[JSON]:
    """The ``chat.completion.chunk`` objects streaming ``turn`` (usage last, when asked for)."""
    base: JSON = {
        "id": f"chatcmpl-stub{index:04d}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_stub",
    }

    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": "" if turn.text is not None else None})
    if turn.is_tool_call:
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": _call_id(turn, index),
                        "type": "function",
                        "function": {"name": turn.tool, "arguments": ""},
                    }
                ]
            }
        )
        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": json.dumps(turn.arguments)}}]})
        yield chunk({}, "tool_calls")
    else:
        text = turn.text or ""
        for start in range(0, len(text), 8):
            yield chunk({"content": text[start : start + 8]})
        yield chunk({}, "stop")
    if include_usage:
        yield {**base, "choices": [], "usage": _chat_usage(turn_usage(turn, index))}


def response_object(turn: StubTurn, index: int, model: str, request: JSON) -> JSON:
    """A Responses API ``response`` object for ``turn``."""
    usage = turn_usage(turn, index)
    if turn.is_tool_call:
        item: JSON = {
            "type": "function_call",
            "id": f"fc_stub{index:04d}",
            "call_id": _call_id(turn, index),
            "name": turn.tool,
            "arguments": json.dumps(turn.arguments),
            "status": "completed",
        }
    else:
        item = {
            "type": "message",
            "id": f"msg_stub{index:04d}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": turn.text or "", "annotations": [], "logprobs": []}],
        }
    return {
        "id": f"resp_stub{index:04d}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [item],
        "parallel_tool_calls": bool(request.get("parallel_tool_calls", True)),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "instructions": request.get("instructions"),
        "previous_response_id": request.get("previous_response_id"),
        "temperature": request.get("temperature", 1.0),
        "top_p": request.get("top_p", 1.0),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "error": None,
        "incomplete_details": None,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        },
    }


def response_events(response: JSON) -> Iterator[JSON]:
    """The Responses API stream for ``response``: created, the output items, completed."""
    seq = 0
    created = {**response, "status": "in_progress", "output": [], "usage": None}
    yield {"type": "response.created", "sequence_number": seq, "response": created}
    for position, item in enumerate(response["output"]):
        seq += 1
        yield {"type": "response.output_item.added", "sequence_number": seq, "output_index": position, "item": item}
        seq += 1
        yield {"type": "response.output_item.done", "sequence_number": seq, "output_index": position, "item": item}
    yield {"type": "response.completed", "sequence_number": seq + 1, "response": response}


def _error_body(message: str, status: int) -> JSON:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": str(status)}}


def _handler_for(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read ``stub.requests`` instead."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send_json(400, _error_body("body is not JSON", 400))
                return
            path = self.path.split("?", 1)[0].rstrip("/")
            if not path.endswith(("/chat/completions", "/responses")):
                self._send_json(404, _error_body(f"no route {path}", 404))
                return
            turn, index = stub.take(path, body)
            if turn is None:
                self._send_json(500, _error_body("script exhausted", 500))
                return
            if turn.error_status is not None:
                self._send_json(turn.error_status, _error_body(turn.error_message, turn.error_status))
                return
            model = stub.response_model or str(body.get("model") or "stub-model")
            stream = bool(body.get("stream"))
            if path.endswith("/chat/completions"):
                if stream:
                    options = body.get("stream_options") or {}
                    include_usage = bool(options.get("include_usage"))
                    self._send_events(
                        chat_completion_chunks(turn, index, model, include_usage=include_usage), typed=False
                    )
                else:
                    self._send_json(200, chat_completion(turn, index, model))
                return
            response = response_object(turn, index, model, body)
            if stream:
                self._send_events(response_events(response), typed=True)
            else:
                self._send_json(200, response)

        def _send_json(self, status: int, payload: JSON) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", "req_stub")
            self.end_headers()
            self.wfile.write(data)

        def _send_events(self, events: Iterator[JSON], *, typed: bool) -> None:
            parts = []
            for event in events:
                head = f"event: {event['type']}\n" if typed else ""
                parts.append(f"{head}data: {json.dumps(event)}\n\n")
            if not typed:
                parts.append("data: [DONE]\n\n")
            data = "".join(parts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
