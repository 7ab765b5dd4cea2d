"""LangGraph and LangChain as agentwatch runs: a callback handler, governed tools, and auto-instrumentation.

One graph invocation (``invoke``, ``ainvoke``, ``stream``, ``astream``) is one agentwatch run,
built on the same ``AgentRun`` as a custom loop: the ``invoke_agent`` span with every run attribute
(totals, budgets, stop reason), budgets checked before each action, the kill switch, content capture
with redaction, and the audit log. Runtime ``langgraph``.

How LangChain's callbacks map onto the contract:

* the graph's root chain → the run. Its end is ``completed``; ``GraphRecursionError`` (LangGraph's
  own superstep limit) → ``max_steps``; a ``RunStopped`` (budget, denial, rejection, kill switch)
  → its stop reason; cancellation (a cancelled task, a stream closed early) → ``cancelled``; any
  other exception → ``error``. The exception still reaches the caller, as LangGraph users expect;
  ``invoke_graph`` returns the run instead, like ``agent_run`` swallows a stop.
* steps. A step is one turn of the agent: it starts with the superstep in which the model is
  called and takes in the supersteps after it that call no model (the tool node), up to the next
  superstep that calls the model. A ReAct turn (model superstep + tools superstep) is therefore one
  step, as in a custom loop or the Agents SDK, so one ``Budget(max_steps=...)`` means the same on
  every runtime. The step budget is checked before the model call that would start the next step.
  Parallel branches of one superstep share its step; the step span lists the nodes it covered
  (``langgraph.nodes``) and the superstep it started in (``langgraph.step``).
* chat-model calls → ``chat {model}`` spans with the model from LangChain's metadata, usage from the
  message's ``usage_metadata``, finish reasons, and the cost from agentwatch's price table; the USD
  budget and the kill switch are checked before each call.
* tool calls → ``execute_tool`` spans: governed tools (``govern_tools``, ``gateway_tools``,
  ``governed_tool_node``) get the gateway's span with disposition and policy rule; any other tool
  gets one from the handler (disposition ``allowed``, rule ``ungoverned``) and counts against the
  tool-call budget.

Spans are parented through LangChain's ``run_id``/``parent_run_id``, not the ambient context, so
parallel branches, threads and asyncio tasks land under the right step. While a node, a model
call or a tool runs, the run, step and span are also made current (``contextvars``), so tools
calling ``get_current_run()``, nested ``agent_run`` blocks and spans of other instrumentations
inside the node are attributed to the run.

Use it explicitly::

    handler = AgentwatchCallbackHandler("support", budget=Budget(max_steps=25), gateway=gateway)
    result = invoke_graph(graph, {"messages": [("user", ticket)]}, handler=handler)
    print(result.run.stop_reason)

or for every graph in the process with ``instrument()`` (a LangChain configure hook: no code
changes; ``uninstrument()`` removes it). Per-invocation values come from the config's metadata
(``agentwatch_tenant_id``, ``agentwatch_track``, ``agentwatch_version``, ``agentwatch_agent``,
``agentwatch_conversation_id``; LangGraph's ``thread_id`` is the conversation id otherwise).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID, uuid4

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._budget import Budget
from agentwatch.instrumentation._guard import end_span, error_description, start_span, telemetry_failed
from agentwatch.instrumentation._run import AgentRun, agent_run
from agentwatch.instrumentation._setup import current_settings
from agentwatch.instrumentation.errors import BudgetExceeded, RunStopped
from agentwatch.instrumentation.integrations.langgraph_tools import (
    GOVERNED_METADATA_KEY,
    Activation,
    GovernedTool,
    Idempotency,
    OnDenied,
    ToolCallSite,
    gateway_tools,
    govern_tools,
    governed_tool_node,
    lc_tool_name,
    tool_functions,
)
from agentwatch.instrumentation.semconv import BudgetName, ToolDisposition, ToolOutcome, Track

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable, RunnableConfig
    from opentelemetry.trace import TracerProvider

    from agentwatch.instrumentation._gateway import ToolGateway
    from agentwatch.instrumentation._llm import LLMCall
    from agentwatch.instrumentation._settings import InstrumentationSettings
    from agentwatch.instrumentation.killswitch import KillSwitch, KillSwitchSource

try:  # LangChain without LangGraph still gets runs from its chains
    from langgraph.errors import GraphRecursionError
except ImportError:  # pragma: no cover - the runtimes extra installs both
    GraphRecursionError = None  # type: ignore[assignment,misc]

__all__ = [
    "GOVERNED_METADATA_KEY",
    "LANGGRAPH_NODES",
    "LANGGRAPH_RECURSION_LIMIT",
    "LANGGRAPH_STEP",
    "METADATA_AGENT",
    "METADATA_CONVERSATION_ID",
    "METADATA_TENANT_ID",
    "METADATA_TRACK",
    "METADATA_VERSION",
    "RUNTIME",
    "UNGOVERNED_RULE",
    "AgentwatchCallbackHandler",
    "GovernedTool",
    "GraphRunResult",
    "Idempotency",
    "LangGraphInstrumentor",
    "OnDenied",
    "ainvoke_graph",
    "default_input",
    "default_output",
    "gateway_tools",
    "govern_tools",
    "governed_tool_node",
    "installed_handler",
    "instrument",
    "invoke_graph",
    "is_instrumented",
    "lc_tool_name",
    "tool_functions",
    "uninstrument",
]

RUNTIME: Final = "langgraph"
"""Value of ``agentwatch.runtime`` on runs recorded by this integration."""

METADATA_AGENT: Final = "agentwatch_agent"
METADATA_TENANT_ID: Final = "agentwatch_tenant_id"
METADATA_VERSION: Final = "agentwatch_version"
METADATA_TRACK: Final = "agentwatch_track"
METADATA_CONVERSATION_ID: Final = "agentwatch_conversation_id"

# Runtime-specific span attributes (outside the shared contract, for people reading a trace).
LANGGRAPH_STEP: Final = semconv.LANGGRAPH_STEP
LANGGRAPH_NODES: Final = semconv.LANGGRAPH_NODES
LANGGRAPH_RECURSION_LIMIT: Final = semconv.LANGGRAPH_RECURSION_LIMIT
UNGOVERNED_RULE: Final = semconv.POLICY_RULE_UNGOVERNED
"""``agentwatch.policy.rule`` of a tool call that did not go through the gateway."""

_ROLES: Final = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "AIMessageChunk": "assistant"}
# LangChain's ls_provider values, as gen_ai.provider.name spells them
_PROVIDERS: Final = {
    "google_genai": "gcp.gen_ai",
    "google_vertexai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "mistralai": "mistral_ai",
    "xai": "x_ai",
}
_TRACKS: Final = frozenset(track.value for track in Track)
_RECURSION_LIMIT: Final = re.compile(r"[Rr]ecursion limit of (\d+)")
_FINISHED_RUNS_KEPT: Final = 256  # finished runs kept for invoke_graph / take_run, oldest dropped
_NEW_STEP_EACH_CALL: Final = -1  # "superstep" of model calls outside any graph: each call is a turn


# --- per-run state --------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Step:
    index: int
    span: Span
    nodes: set[str] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class _RunState:
    """One agentwatch run and where its graph is: current superstep, current step, open entries."""

    run: AgentRun
    root_id: UUID
    graph_id: UUID | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    superstep: int | None = None
    superstep_started_ns: int = 0
    superstep_nodes: list[str] = field(default_factory=list)
    previous_supersteps_ended_ns: int | None = None
    stepped_superstep: int | None = None  # the superstep whose model call opened the current step
    step: _Step | None = None
    last_node_end_ns: int | None = None
    entries: set[UUID] = field(default_factory=set)
    finished: bool = False

    def parent_span(self) -> Span:
        return self.step.span if self.step is not None else self.run.span

    def step_index(self) -> int | None:
        return self.step.index if self.step is not None else None


@dataclass(eq=False, slots=True)
class _Entry:
    """A LangChain run (chain, node, model call, tool) inside an agentwatch run."""

    state: _RunState
    kind: str  # root | node | chain | llm | tool
    inner_span: Span | None = None  # a handler-made tool span this run is inside (children go under it)
    activation: Activation | None = None
    llm: LLMCall | None = None
    tool: str | None = None
    tool_span: Span | None = None
    tool_args: Any = None
    call_id: str | None = None
    parent_span: Span | None = None


# --- message helpers ------------------------------------------------------------------------------


def _text(content: Any) -> Any:
    """Text of message content: a string, or the text blocks of a content list joined (else as is)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            block if isinstance(block, str) else block.get("text")
            for block in content
            if isinstance(block, str) or (isinstance(block, Mapping) and block.get("type") == "text")
        ]
        if len(texts) == len(content):
            return "".join(t for t in texts if isinstance(t, str))
    return content


def _message_record(message: Any) -> dict[str, Any]:
    """One message as ``{"role", "content"}`` (plus tool calls / call id), whatever form LangGraph accepted."""
    if isinstance(message, BaseMessage):
        record: dict[str, Any] = {"role": _ROLES.get(message.type, message.type), "content": _text(message.content)}
        if isinstance(message, AIMessage) and message.tool_calls:
            record["tool_calls"] = [
                {"id": call.get("id"), "name": call["name"], "arguments": call["args"]} for call in message.tool_calls
            ]
        if isinstance(message, ToolMessage):
            record["tool_call_id"] = message.tool_call_id
            if message.artifact is not None:
                # the raw result, as the tool span records it: redaction then walks its structure
                # instead of JSON text escaped once more inside the message
                record["content"] = message.artifact
        return record
    if isinstance(message, tuple) and len(message) == 2:
        role = {"human": "user", "ai": "assistant"}.get(str(message[0]), str(message[0]))
        return {"role": role, "content": _text(message[1])}
    if isinstance(message, Mapping) and "content" in message:
        return {"role": message.get("role", "user"), "content": _text(message["content"])}
    return {"role": "user", "content": _text(message)}


def _messages_of(value: Any) -> list[Any] | None:
    if isinstance(value, Mapping):
        messages = value.get("messages")
        if isinstance(messages, list | tuple):
            return list(messages)
        return None
    if isinstance(value, list) and value and all(isinstance(m, BaseMessage) for m in value):
        return value
    return None


def default_input(inputs: Any) -> Any:
    """What a run records as its input: the user's text for a one-message state, else the messages or the value."""
    if isinstance(inputs, str):
        return inputs
    messages = _messages_of(inputs)
    if messages is None:
        return inputs
    records = [_message_record(m) for m in messages]
    if len(records) == 1:
        return records[0]["content"]
    return records


def default_output(outputs: Any) -> Any:
    """What a run records as its output: the final answer's text for a messages state, else the value."""
    messages = _messages_of(outputs)
    if not messages:
        return outputs
    last = _message_record(messages[-1])
    return last["content"] if last["role"] == "assistant" else last


# --- model call helpers ---------------------------------------------------------------------------


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _model_name(serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    for value in (
        metadata.get("ls_model_name"),
        params.get("model"),
        params.get("model_name"),
        params.get("model_id"),
        params.get("deployment_name"),
    ):
        if name := _string(value):
            return name
    serialized_kwargs = serialized.get("kwargs") if isinstance(serialized, Mapping) else None
    if isinstance(serialized_kwargs, Mapping):
        for key in ("model", "model_name", "model_id"):
            if name := _string(serialized_kwargs.get(key)):
                return name
    return _string(params.get("_type")) or "unknown"


def _provider(metadata: Mapping[str, Any]) -> str | None:
    provider = _string(metadata.get("ls_provider"))
    return _PROVIDERS.get(provider, provider) if provider else None


@dataclass(frozen=True, slots=True)
class _Reply:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    messages: tuple[dict[str, Any], ...] = ()


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _reply(response: LLMResult) -> _Reply:
    generations = [g for batch in response.generations for g in batch]
    llm_output = response.llm_output or {}
    first = generations[0] if generations else None
    message = first.message if isinstance(first, ChatGeneration) else None
    input_tokens = output_tokens = cached = 0
    usage = message.usage_metadata if isinstance(message, AIMessage) else None
    if usage:
        input_tokens, output_tokens = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
        cached = _count((usage.get("input_token_details") or {}).get("cache_read"))
    else:
        legacy = llm_output.get("token_usage") or llm_output.get("usage")
        if isinstance(legacy, Mapping):
            input_tokens = _count(legacy.get("prompt_tokens", legacy.get("input_tokens")))
            output_tokens = _count(legacy.get("completion_tokens", legacy.get("output_tokens")))
    metadata: Mapping[str, Any] = message.response_metadata if message is not None else {}
    reasons: list[str] = []
    for generation in generations:
        info = generation.generation_info or {}
        meta = generation.message.response_metadata if isinstance(generation, ChatGeneration) else {}
        reason = _string(meta.get("finish_reason")) or _string(meta.get("stop_reason"))
        reason = reason or _string(info.get("finish_reason"))
        if reason is None and isinstance(generation, ChatGeneration):
            calls = isinstance(generation.message, AIMessage) and bool(generation.message.tool_calls)
            reason = "tool_calls" if calls else "stop"
        if reason:
            reasons.append(reason)
    records = tuple(
        _message_record(g.message) if isinstance(g, ChatGeneration) else {"role": "assistant", "content": g.text}
        for g in generations
    )
    return _Reply(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=min(cached, input_tokens),
        response_model=_string(metadata.get("model_name"))
        or _string(metadata.get("model"))
        or _string(llm_output.get("model_name")),
        response_id=_string(metadata.get("id")),
        finish_reasons=tuple(reasons),
        messages=records,
    )


def _tool_result(output: Any) -> Any:
    """The raw result of a tool: a ToolMessage's artifact when there is one, else its content."""
    if isinstance(output, ToolMessage):
        return output.artifact if output.artifact is not None else output.content
    return output


def _recursion_limit(error: BaseException) -> int | None:
    match = _RECURSION_LIMIT.search(str(error))
    return int(match.group(1)) if match else None


def _is_recursion_error(error: BaseException | None) -> bool:
    return GraphRecursionError is not None and isinstance(error, GraphRecursionError)


def _is_graph_root(metadata: Mapping[str, Any]) -> bool:
    # Pregel marks its root chain (and everything under it) ls_integration=langgraph; only the
    # root of a graph that is not itself running inside a node lacks langgraph_node.
    return metadata.get("ls_integration") == "langgraph" and "langgraph_node" not in metadata


# --- deliberate stops are not callback failures -----------------------------------------------------


def _stop_names() -> set[str]:
    names: set[str] = set()
    pending: list[type[BaseException]] = [RunStopped]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return names


class _DeliberateStopFilter(logging.Filter):
    """Drops LangChain's "Error in ... callback" warning when the handler stopped a run on purpose.

    A refused step or model call is raised from a callback (that is how a callback stops a graph);
    it is recorded on the run span and in the audit log, so LangChain's warning would only be noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg != "Error in %s.%s callback: %s" or not isinstance(args, tuple) or len(args) != 3:
            return True
        handler_name, _, error = args
        if handler_name != AgentwatchCallbackHandler.__name__ or not isinstance(error, str):
            return True
        return error.split("(", 1)[0] not in _stop_names()


_stop_filter: Final = _DeliberateStopFilter()
_stop_filter_lock: Final = threading.Lock()


def _install_stop_filter() -> None:
    logger = logging.getLogger("langchain_core.callbacks.manager")
    with _stop_filter_lock:
        if _stop_filter not in logger.filters:
            logger.addFilter(_stop_filter)


# Roots claimed by a handler, so a handler given explicitly and the instrument() one never both
# record the same invocation (the explicit one sees the root first: config callbacks come first).
_claims: dict[UUID, AgentwatchCallbackHandler] = {}
_claims_lock: Final = threading.Lock()


def _claim(root_id: UUID, handler: AgentwatchCallbackHandler) -> bool:
    with _claims_lock:
        owner = _claims.setdefault(root_id, handler)
        return owner is handler


def _release(root_id: UUID, handler: AgentwatchCallbackHandler) -> None:
    with _claims_lock:
        if _claims.get(root_id) is handler:
            del _claims[root_id]


# --- the handler ------------------------------------------------------------------------------------


class AgentwatchCallbackHandler(BaseCallbackHandler):
    """Records each graph (or chain) invocation it sees as an agentwatch run and enforces its budgets.

    Pass it in ``config={"callbacks": [handler]}`` (one handler can serve many concurrent
    invocations) or let ``instrument()`` add it everywhere. ``agent`` defaults to the graph's name.
    With ``graphs_only`` (what ``instrument()`` uses) only LangGraph graphs become runs; otherwise
    any root chain the handler is given does too. ``input_mapper`` / ``output_mapper`` choose what
    is recorded as the run's input and output when content capture is on (default: the user's text
    and the final answer of a messages state).
    """

    # A refused step, model call or tool call is raised from the callback: that is what stops the
    # graph. Inline, so the callback runs in the runnable's own context and order.
    raise_error: bool = True
    run_inline: bool = True

    def __init__(
        self,
        agent: str | None = None,
        *,
        tenant_id: str | None = None,
        version: str | None = None,
        track: str = "stable",
        budget: Budget | None = None,
        gateway: ToolGateway | None = None,
        conversation_id: str | None = None,
        kill_switch: KillSwitch | KillSwitchSource | None = None,
        tracer_provider: TracerProvider | None = None,
        settings: InstrumentationSettings | None = None,
        graphs_only: bool = False,
        input_mapper: Callable[[Any], Any] = default_input,
        output_mapper: Callable[[Any], Any] = default_output,
    ) -> None:
        super().__init__()
        if agent is not None and (not isinstance(agent, str) or not agent.strip()):
            raise TypeError("agent must be a non-empty string naming the agent (or None for the graph's name)")
        if track not in _TRACKS:
            raise ValueError(f"track must be one of {sorted(_TRACKS)}, got {track!r}")
        self.agent = agent
        self.tenant_id = tenant_id
        self.version = version
        self.track = track
        self.budget = budget if budget is not None else Budget()
        self.gateway = gateway
        self.conversation_id = conversation_id
        self.kill_switch = kill_switch
        self.tracer_provider = tracer_provider
        self.settings = settings
        self.graphs_only = graphs_only
        self.input_mapper = input_mapper
        self.output_mapper = output_mapper
        self._entries: dict[UUID, _Entry] = {}
        self._lock = threading.Lock()
        self._finished: OrderedDict[UUID, AgentRun] = OrderedDict()
        self._last_run: AgentRun | None = None
        _install_stop_filter()

    # -- what callers read ---------------------------------------------------------------------

    @property
    def last_run(self) -> AgentRun | None:
        """The run that finished last (with concurrent invocations, prefer ``take_run``)."""
        return self._last_run

    def take_run(self, root_run_id: UUID) -> AgentRun | None:
        """The finished run of the invocation whose LangChain ``run_id`` is ``root_run_id`` (once)."""
        with self._lock:
            return self._finished.pop(root_run_id, None)

    def tool_call_site(self, lc_run_id: UUID) -> ToolCallSite | None:
        """Where the governed tool run ``lc_run_id`` happens (run, step, parent span, model call id)."""
        entry = self._entries.get(lc_run_id)
        if entry is None or entry.kind != "tool" or entry.state.finished:
            return None
        parent = entry.parent_span if entry.parent_span is not None else entry.state.parent_span()
        return ToolCallSite(run=entry.state.run, step=entry.state.step_index(), parent=parent, call_id=entry.call_id)

    # -- LangChain callbacks ---------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._guarded("a chain start", self._chain_started, inputs, run_id, parent_run_id, metadata or {}, kwargs)

    def on_chain_end(
        self, outputs: dict[str, Any], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("a chain end", self._chain_ended, run_id, outputs, None)

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("a chain error", self._chain_ended, run_id, None, error)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._guarded(
            "a chat model start",
            self._model_started,
            run_id=run_id,
            parent_run_id=parent_run_id,
            serialized=serialized,
            metadata=metadata or {},
            kwargs=kwargs,
            input_messages=lambda: [_message_record(m) for batch in messages for m in batch],
            operation=semconv.OP_CHAT,
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._guarded(
            "an LLM start",
            self._model_started,
            run_id=run_id,
            parent_run_id=parent_run_id,
            serialized=serialized,
            metadata=metadata or {},
            kwargs=kwargs,
            input_messages=lambda: [{"role": "user", "content": prompt} for prompt in prompts],
            operation="text_completion",
        )

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("an LLM end", self._model_ended, run_id, response, None)

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("an LLM error", self._model_ended, run_id, None, error)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        arguments = inputs if inputs is not None else input_str
        name = _string(serialized.get("name") if serialized else None) or _string(kwargs.get("name")) or "tool"
        self._guarded(
            "a tool start",
            self._tool_started,
            run_id=run_id,
            parent_run_id=parent_run_id,
            name=name,
            arguments=arguments,
            metadata=metadata or {},
            call_id=_string(kwargs.get("tool_call_id")),
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._guarded("a tool end", self._tool_ended, run_id, output, None)

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("a tool error", self._tool_ended, run_id, None, error)

    # Tool callbacks are gated by ``ignore_agent`` in LangChain, so that one stays False.
    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    # -- plumbing --------------------------------------------------------------------------------

    def _strict(self) -> bool:
        return (self.settings if self.settings is not None else current_settings()).strict

    def _guarded(self, action: str, function: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Run one callback: deliberate stops propagate (they stop the graph), telemetry bugs never do."""
        try:
            function(*args, **kwargs)
        except RunStopped:
            raise
        except Exception as exc:
            telemetry_failed(f"handling {action}", exc, strict=self._strict())

    def _register(self, run_id: UUID, entry: _Entry) -> None:
        with self._lock:
            self._entries[run_id] = entry
            entry.state.entries.add(run_id)

    def _unregister(self, run_id: UUID) -> _Entry | None:
        with self._lock:
            entry = self._entries.pop(run_id, None)
            if entry is not None:
                entry.state.entries.discard(run_id)
            return entry

    def _parent(self, parent_run_id: UUID | None) -> _Entry | None:
        if parent_run_id is None:
            return None
        entry = self._entries.get(parent_run_id)
        if entry is None or entry.state.finished:
            return None
        return entry

    # -- chains: the run, its graph's nodes, anything else -----------------------------------------

    def _chain_started(
        self,
        inputs: Any,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: Mapping[str, Any],
        kwargs: Mapping[str, Any],
    ) -> None:
        parent = self._parent(parent_run_id)
        if parent is None:
            if _is_graph_root(metadata) or (parent_run_id is None and not self.graphs_only):
                self._run_started(run_id, inputs, metadata, _string(kwargs.get("name")))
            return
        state = parent.state
        if state.graph_id is None and _is_graph_root(metadata):
            state.graph_id = run_id  # a graph inside a chain the run started with: its supersteps are the steps
        superstep = metadata.get("langgraph_step")
        if parent_run_id == state.graph_id and isinstance(superstep, int):
            node = _string(metadata.get("langgraph_node")) or _string(kwargs.get("name")) or "node"
            self._node_started(state, run_id, superstep, node)
            return
        self._register(run_id, _Entry(state, "chain", inner_span=parent.inner_span))

    def _run_started(self, run_id: UUID, inputs: Any, metadata: Mapping[str, Any], name: str | None) -> None:
        if not _claim(run_id, self):
            return  # another agentwatch handler records this invocation

        def meta(key: str) -> str | None:
            value = metadata.get(key)
            return str(value) if value is not None and value != "" else None

        try:
            scope = agent_run(
                meta(METADATA_AGENT) or self.agent or name or RUNTIME,
                tenant_id=meta(METADATA_TENANT_ID) or self.tenant_id,
                version=meta(METADATA_VERSION) or self.version,
                track=meta(METADATA_TRACK) or self.track,
                budget=self.budget,
                gateway=self.gateway,
                runtime=RUNTIME,
                conversation_id=meta(METADATA_CONVERSATION_ID) or self.conversation_id or meta("thread_id"),
                kill_switch=self.kill_switch,
                tracer_provider=self.tracer_provider,
                settings=self.settings,
            )
            run = scope.run
            run._start()
        except BaseException:
            _release(run_id, self)
            raise
        state = _RunState(run=run, root_id=run_id, graph_id=run_id if _is_graph_root(metadata) else None)
        self._register(run_id, _Entry(state, "root"))
        if run.settings.capture_content:
            run.record_input(self.input_mapper(inputs))

    def _node_started(self, state: _RunState, run_id: UUID, superstep: int, node: str) -> None:
        run = state.run
        run.check()  # an explicit stop, a terminal budget, the kill switch or the time budget end it here
        with state.lock:
            if superstep != state.superstep:
                self._superstep_finished(state)
                state.superstep = superstep
                state.superstep_started_ns = time.time_ns()
                state.previous_supersteps_ended_ns = state.last_node_end_ns
            state.superstep_nodes.append(node)
            step, parent = state.step_index(), state.parent_span()
        entry = _Entry(state, "node")
        entry.activation = Activation(run, step, parent)
        self._register(run_id, entry)

    @staticmethod
    def _superstep_finished(state: _RunState) -> None:
        """Credit the superstep's nodes to the step that was current when it ended (caller holds the lock)."""
        if state.step is not None:
            state.step.nodes.update(state.superstep_nodes)
        state.superstep_nodes = []

    def _chain_ended(self, run_id: UUID, outputs: Any, error: BaseException | None) -> None:
        entry = self._unregister(run_id)
        if entry is None:
            return
        if entry.activation is not None:
            entry.activation.restore()
        if entry.kind == "node":
            with entry.state.lock:
                entry.state.last_node_end_ns = time.time_ns()
        elif entry.kind == "root":
            self._run_finished(entry.state, outputs, error)

    def _run_finished(self, state: _RunState, outputs: Any, error: BaseException | None) -> None:
        run = state.run
        with state.lock:
            if state.finished:
                return
            state.finished = True
            self._superstep_finished(state)
            self._close_step(state, state.last_node_end_ns)
        with self._lock:
            for entry_id in state.entries:
                self._entries.pop(entry_id, None)
            state.entries.clear()
        _release(state.root_id, self)
        stop = error
        if error is not None and _is_recursion_error(error):
            # LangGraph's own superstep limit ended the run: a step budget, whoever set it.
            limit = _recursion_limit(error)
            if limit is not None:
                run.span.set_attribute(LANGGRAPH_RECURSION_LIMIT, limit)
            used = limit if limit is not None else run.steps
            stop = BudgetExceeded(BudgetName.STEPS, used, used)
        try:
            if error is None and run.settings.capture_content:
                run.record_output(self.output_mapper(outputs))
        finally:
            run._finish(stop)
            with self._lock:
                self._finished[state.root_id] = run
                while len(self._finished) > _FINISHED_RUNS_KEPT:
                    self._finished.popitem(last=False)
                self._last_run = run

    # -- steps ---------------------------------------------------------------------------------------

    def _close_step(self, state: _RunState, end_ns: int | None) -> None:
        step = state.step
        if step is None:
            return
        state.step = None
        if step.nodes:
            step.span.set_attribute(LANGGRAPH_NODES, sorted(step.nodes))
        end_span(step.span, strict=state.run.settings.strict, end_time=end_ns)

    def _step_for_model_call(self, state: _RunState) -> None:
        """Open a new step if this model call starts a turn (the first model call of its superstep)."""
        superstep = state.superstep if state.superstep is not None else _NEW_STEP_EACH_CALL
        with state.lock:
            if superstep != _NEW_STEP_EACH_CALL and state.stepped_superstep == superstep:
                return
            run = state.run
            index = run._admit_step()  # raises when the step budget, the time or the kill switch says no
            started = state.superstep_started_ns if state.superstep is not None else time.time_ns()
            self._close_step(state, state.previous_supersteps_ended_ns)
            attributes: dict[str, AttributeValue] = dict(run._base_attributes)
            attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_STEP
            attributes[semconv.STEP_INDEX] = index
            if state.superstep is not None:
                attributes[LANGGRAPH_STEP] = state.superstep
            span = start_span(
                run.tracer,
                semconv.step_span_name(run.agent),
                attributes,
                context=trace.set_span_in_context(run.span),
                strict=run.settings.strict,
                start_time=started,
            )
            state.step = _Step(index=index, span=span)
            state.stepped_superstep = superstep

    # -- model calls -------------------------------------------------------------------------------

    def _model_started(
        self,
        *,
        run_id: UUID,
        parent_run_id: UUID | None,
        serialized: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
        kwargs: Mapping[str, Any],
        input_messages: Callable[[], list[dict[str, Any]]],
        operation: str,
    ) -> None:
        parent = self._parent(parent_run_id)
        if parent is None:
            return
        state = parent.state
        run = state.run
        params = kwargs.get("invocation_params")
        model = _model_name(serialized, metadata, params if isinstance(params, Mapping) else {})
        if parent.inner_span is None:
            self._step_for_model_call(state)
        step = state.step_index()
        parent_span = parent.inner_span if parent.inner_span is not None else state.parent_span()
        messages = input_messages() if run.settings.capture_content else None
        call = run.llm_call(model=model, provider=_provider(metadata), operation=operation, input_messages=messages)
        # LLMCall takes its parent and step from the context: make them the ones this call belongs to.
        placement = Activation(run, step, parent_span)
        try:
            call.start()
        finally:
            placement.restore()
        entry = _Entry(state, "llm", inner_span=parent.inner_span, llm=call)
        entry.activation = Activation(run, step, call._span)  # provider SDK spans go under the call
        self._register(run_id, entry)

    def _model_ended(self, run_id: UUID, response: LLMResult | None, error: BaseException | None) -> None:
        entry = self._unregister(run_id)
        if entry is None or entry.llm is None:
            return
        if entry.activation is not None:
            entry.activation.restore()
        call = entry.llm
        if response is not None:
            reply = _reply(response)
            call.set_usage(
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                cached_input_tokens=reply.cached_input_tokens,
            )
            call.set_response(
                model=reply.response_model,
                finish_reasons=reply.finish_reasons,
                response_id=reply.response_id,
                output_messages=list(reply.messages) if entry.state.run.settings.capture_content else None,
            )
        call.finish(error=error)

    # -- tool calls --------------------------------------------------------------------------------

    def _tool_started(
        self,
        *,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        arguments: Any,
        metadata: Mapping[str, Any],
        call_id: str | None,
    ) -> None:
        parent = self._parent(parent_run_id)
        if parent is None:
            return
        state = parent.state
        run = state.run
        parent_span = parent.inner_span if parent.inner_span is not None else state.parent_span()
        entry = _Entry(state, "tool", inner_span=parent.inner_span, call_id=call_id, parent_span=parent_span)
        if metadata.get(GOVERNED_METADATA_KEY):
            self._register(run_id, entry)  # the gateway admits, spans and records it
            return
        run._admit_tool_call()  # refused before it starts when over budget, like a gateway call
        step = state.step_index()
        attributes: dict[str, AttributeValue] = dict(run._base_attributes)
        attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_EXECUTE_TOOL
        attributes[semconv.GEN_AI_TOOL_NAME] = name
        attributes[semconv.GEN_AI_TOOL_TYPE] = "function"
        attributes[semconv.POLICY_RULE] = UNGOVERNED_RULE
        if step is not None:
            attributes[semconv.STEP_INDEX] = step
        if call_id:
            attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
        span = start_span(
            run.tracer,
            semconv.tool_span_name(name),
            attributes,
            context=trace.set_span_in_context(parent_span),
            strict=run.settings.strict,
        )
        entry.tool, entry.tool_span, entry.tool_args, entry.inner_span = name, span, arguments, span
        entry.activation = Activation(run, step, span)
        self._register(run_id, entry)

    def _tool_ended(self, run_id: UUID, output: Any, error: BaseException | None) -> None:
        entry = self._unregister(run_id)
        if entry is None or entry.tool_span is None or entry.tool is None:
            return
        if entry.activation is not None:
            entry.activation.restore()
        run, span = entry.state.run, entry.tool_span
        outcome = ToolOutcome.OK if error is None else ToolOutcome.ERROR
        span.set_attributes(
            {semconv.TOOL_DISPOSITION: ToolDisposition.ALLOWED.value, semconv.TOOL_OUTCOME: outcome.value}
        )
        settings = run.settings
        if settings.capture_content:
            span.set_attribute(semconv.GEN_AI_TOOL_CALL_ARGUMENTS, settings.redactor.to_attribute(entry.tool_args))
            result = _tool_result(output) if error is None else None
            if result is not None:
                span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, settings.redactor.to_attribute(result))
        if error is not None:
            span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, error_description(error, settings)))
        run._tool_call_recorded(entry.tool, ToolDisposition.ALLOWED, outcome)
        end_span(span, strict=settings.strict)


# --- running a graph and getting its run back ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphRunResult:
    """A graph invocation's agentwatch run (always with a stop reason) and its output (None if it stopped)."""

    run: AgentRun
    output: Any = None


def _is_stop(error: BaseException) -> bool:
    return isinstance(error, RunStopped) or _is_recursion_error(error)


def _with_handler(config: RunnableConfig | None, handler: AgentwatchCallbackHandler) -> tuple[RunnableConfig, UUID]:
    merged: RunnableConfig = dict(config) if config else {}  # type: ignore[assignment]  # a TypedDict copy
    root_id = merged.get("run_id") or uuid4()
    merged["run_id"] = root_id
    callbacks = merged.get("callbacks")
    if callbacks is None:
        merged["callbacks"] = [handler]
    elif isinstance(callbacks, BaseCallbackManager):
        if handler not in callbacks.handlers:
            manager = callbacks.copy()
            manager.add_handler(handler, inherit=True)
            merged["callbacks"] = manager
    elif handler not in callbacks:
        merged["callbacks"] = [*callbacks, handler]
    return merged, root_id


def _resolve_handler(handler: AgentwatchCallbackHandler | None) -> AgentwatchCallbackHandler:
    if handler is not None:
        return handler
    installed = installed_handler()
    if installed is None:
        raise TypeError("pass handler=AgentwatchCallbackHandler(...) or call instrument() first")
    return installed


def _result(handler: AgentwatchCallbackHandler, root_id: UUID, output: Any) -> GraphRunResult:
    run = handler.take_run(root_id)
    if run is None:
        raise RuntimeError(
            "the graph finished without an agentwatch run: is the runnable a LangGraph graph (or "
            "is graphs_only=False), and did it keep the callbacks of its config?"
        )
    return GraphRunResult(run=run, output=output)


def invoke_graph(
    graph: Runnable[Any, Any],
    input: Any,
    config: RunnableConfig | None = None,
    *,
    handler: AgentwatchCallbackHandler | None = None,
) -> GraphRunResult:
    """``graph.invoke`` as an agentwatch run, with ``agent_run``'s contract: a stop is not a crash.

    A budget, denial, rejection, kill switch or LangGraph's recursion limit ends the run with its
    stop reason and returns (``output`` None); any other exception propagates unchanged after the
    run recorded ``error`` (or ``cancelled``). ``handler`` defaults to the one ``instrument()`` installed.
    """
    chosen = _resolve_handler(handler)
    merged, root_id = _with_handler(config, chosen)
    try:
        output = graph.invoke(input, merged)
    except BaseException as exc:
        if not _is_stop(exc):
            raise
        return _result(chosen, root_id, None)
    return _result(chosen, root_id, output)


async def ainvoke_graph(
    graph: Runnable[Any, Any],
    input: Any,
    config: RunnableConfig | None = None,
    *,
    handler: AgentwatchCallbackHandler | None = None,
) -> GraphRunResult:
    """``graph.ainvoke`` as an agentwatch run (see ``invoke_graph``)."""
    chosen = _resolve_handler(handler)
    merged, root_id = _with_handler(config, chosen)
    try:
        output = await graph.ainvoke(input, merged)
    except BaseException as exc:
        if not _is_stop(exc):
            raise
        return _result(chosen, root_id, None)
    return _result(chosen, root_id, output)


# --- auto-instrumentation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Installation:
    handler: AgentwatchCallbackHandler
    variable: ContextVar[AgentwatchCallbackHandler | None]


class _Installed:
    """What ``instrument()`` installed in this process (one at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installation: _Installation | None = None


_installed: Final = _Installed()


def instrument(*, tracer_provider: TracerProvider | None = None, **options: Any) -> None:
    """Record every LangGraph graph run in this process, with no change to the code that runs them.

    Registers a LangChain configure hook: every callback manager LangChain builds (so every
    graph, in every thread and task) gets one shared ``AgentwatchCallbackHandler(graphs_only=True,
    **options)``. Idempotent (a second call changes nothing); ``uninstrument()`` removes it.
    """
    from langchain_core.tracers.context import register_configure_hook

    with _installed.lock:
        if _installed.installation is not None:
            return
        options.setdefault("graphs_only", True)
        handler = AgentwatchCallbackHandler(tracer_provider=tracer_provider, **options)
        # The default, not a value set in some context: every thread and task sees the handler.
        variable: ContextVar[AgentwatchCallbackHandler | None] = ContextVar(
            "agentwatch_langgraph_handler", default=handler
        )
        register_configure_hook(variable, inheritable=True)
        _installed.installation = _Installation(handler=handler, variable=variable)


def uninstrument() -> None:
    """Remove what ``instrument()`` added; LangChain's hook list is left exactly as it was before."""
    from langchain_core.tracers import context as tracer_context

    with _installed.lock:
        installation = _installed.installation
        if installation is None:
            return
        variable = installation.variable
        # LangChain has no public way to unregister a hook; drop ours (and only ours) in place.
        tracer_context._configure_hooks[:] = [
            hook for hook in tracer_context._configure_hooks if hook[0] is not variable
        ]
        _installed.installation = None


def is_instrumented() -> bool:
    """True while ``instrument()`` is in effect."""
    return _installed.installation is not None


def installed_handler() -> AgentwatchCallbackHandler | None:
    """The handler ``instrument()`` installed, if any (to read its ``last_run`` or pass to ``invoke_graph``)."""
    installation = _installed.installation
    return installation.handler if installation is not None else None


class LangGraphInstrumentor:
    """``instrument()`` / ``uninstrument()`` in the shape OpenTelemetry's auto-instrumentation loads.

    Registered under the ``opentelemetry_instrumentor`` entry point, so ``opentelemetry-instrument
    python app.py`` records LangGraph runs with no code change. The loader's own options are ignored.
    """

    _LOADER_OPTIONS: Final = frozenset({"skip_dep_check", "raise_exception_on_conflict"})

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("langchain-core >= 1.0",)

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return is_instrumented()

    def instrument(self, **kwargs: Any) -> None:
        options = {key: value for key, value in kwargs.items() if key not in self._LOADER_OPTIONS}
        instrument(**options)

    def uninstrument(self, **kwargs: Any) -> None:
        uninstrument()
