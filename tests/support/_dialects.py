"""Scripted agents run through the real third-party GenAI instrumentations, against the OpenAI stub.

One function per dialect (and per variant); each takes the ``TracerProvider`` the spans go to (a
test exports them over OTLP to a collector, or captures them in memory) and optionally an
``OpenAIStub`` (else it starts its own), instruments, runs one scripted agent, uninstruments
everything it instrumented (instrumentors are process-global) and returns a ``DialectRun``: the
token sums, LLM and tool call counts computed from the stub's script, and the exception the run
ended with (when the variant ends in one). The caller flushes its provider.

The dialects: OpenInference (Agents SDK, LangChain/LangGraph), the OpenTelemetry GenAI conventions
(``opentelemetry-instrumentation-openai-v2`` and ``opentelemetry-util-genai``'s agent/tool helpers),
OpenLLMetry (its standalone ``opentelemetry-instrumentation-openai`` / ``-langchain`` /
``-openai-agents``), OpenLIT (``openlit_run``; imported lazily: ``openlit`` pins ``openai<3`` and
cannot share an environment with ``openai-agents>=0.24``), and the two double-count combinations
with agentwatch's own instrumentation.

The Agents SDK's processor list is saved before and restored after every run, so neither its
default export (to its backend; there is no network) nor a processor an instrumentor forgets to
remove outlives the function.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from _openai_stub import OpenAIStub, StubTurn, TurnUsage, call, fail, say, turn_usage
from opentelemetry.sdk.trace import TracerProvider

MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
AGENT = "support"
TOOL = "lookup_order"
ORDER_ARGS = {"order_id": "1234"}
QUESTION = "Where is my order 1234?"
ANSWER = "Order 1234 has shipped."
API_KEY = "sk-stub-not-a-real-key"


def lookup_order(order_id: str) -> str:
    """Look up an order's status by its id."""
    return f"order {order_id}: shipped"


@dataclass(frozen=True)
class DialectRun:
    """What a dialect function ran: exact numbers from the stub's script, for assertions."""

    dialect: str
    variant: str
    usage: TurnUsage
    llm_calls: int
    tool_calls: int
    error: str | None = None
    """The exception type name the run ended with (``MaxTurnsExceeded``, ...), ``None`` when it completed."""


# --- shared plumbing ------------------------------------------------------------------------------


@contextlib.contextmanager
def _scripted(stub: OpenAIStub | None, turns: Sequence[StubTurn]) -> Iterator[tuple[OpenAIStub, int]]:
    """The stub (given, or a fresh one for this run) with ``turns`` appended, and the index of the first."""
    if stub is None:
        with OpenAIStub(turns, response_model=RESPONSE_MODEL) as own:
            yield own, 1
        return
    first = len(stub) + 1  # the turns before these were all answered
    stub.extend(turns)
    yield stub, first


def _summary(
    dialect: str,
    variant: str,
    turns: Sequence[StubTurn],
    first: int,
    answered: int,
    *,
    tool_calls: int,
    error: BaseException | None = None,
) -> DialectRun:
    used = [turn_usage(t, first + i) for i, t in enumerate(turns[:answered]) if t.error_status is None]
    usage = TurnUsage(
        input_tokens=sum(u.input_tokens for u in used),
        output_tokens=sum(u.output_tokens for u in used),
        cached_input_tokens=sum(u.cached_input_tokens for u in used),
        reasoning_tokens=sum(u.reasoning_tokens for u in used),
    )
    return DialectRun(
        dialect,
        variant,
        usage,
        llm_calls=len(used),
        tool_calls=tool_calls,
        error=type(error).__name__ if error else None,
    )


@contextlib.contextmanager
def _sdk_processors_restored() -> Iterator[None]:
    """Run with the Agents SDK's processor list emptied; put the original list back afterwards."""
    from agents import set_trace_processors
    from agents.tracing import get_trace_provider

    provider = get_trace_provider()
    original = list(getattr(getattr(provider, "_multi_processor", None), "_processors", ()))
    set_trace_processors([])
    try:
        yield
    finally:
        set_trace_processors(original)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _unwrap_leftovers(wrapper_module_prefix: str, *module_prefixes: str) -> int:
    """Undo the ``wrapt`` patches an instrumentation left on classes after its ``uninstrument()``.

    OpenLLMetry's ``_uninstrument`` calls ``unwrap("openai.resources.chat.completions",
    "Completions.create")``, which ``opentelemetry-instrumentation``'s ``unwrap`` reads as module
    ``openai.resources.chat``, object ``completions``, attribute ``"Completions.create"``: nothing
    is unwrapped and every later call still makes spans on the old provider. This restores each
    class attribute whose wrapper function comes from a module under ``wrapper_module_prefix``.
    """
    import sys

    from wrapt import FunctionWrapper

    restored = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(module_prefixes):
            continue
        for owner in list(vars(module).values()):
            if not isinstance(owner, type) or getattr(owner, "__module__", "") != name:
                continue
            for attribute, value in list(vars(owner).items()):
                if not isinstance(value, FunctionWrapper):
                    continue
                wrapper = getattr(value, "_self_wrapper", None)
                if getattr(wrapper, "__module__", "").startswith(wrapper_module_prefix):
                    setattr(owner, attribute, value.__wrapped__)
                    restored += 1
    return restored


def _agents_model(base_url: str, *, chat: bool = False) -> Any:
    """The Agents SDK's own OpenAI model (Responses API, or Chat Completions) on an async client to the stub."""
    from agents import OpenAIChatCompletionsModel, OpenAIResponsesModel
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    if chat:
        return OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
    return OpenAIResponsesModel(model=MODEL, openai_client=client)


def _run_agents(base_url: str, variant: str, *, chat: bool = False, counter: list[int]) -> BaseException | None:
    """Run the support agent on the Agents SDK; ``variant``: ``tool``, ``max_turns`` or ``guardrail``."""
    from agents import (
        Agent,
        GuardrailFunctionOutput,
        InputGuardrailTripwireTriggered,
        MaxTurnsExceeded,
        RunContextWrapper,
        Runner,
        TResponseInputItem,
        function_tool,
        input_guardrail,
    )
    from openai import APIStatusError

    @function_tool(name_override=TOOL)
    def lookup(order_id: str) -> str:
        """Look up an order's status by its id."""
        counter[0] += 1
        return lookup_order(order_id)

    guardrails: list[Any] = []
    if variant == "guardrail":

        @input_guardrail(name="no_refunds", run_in_parallel=False)
        def no_refunds(
            ctx: RunContextWrapper[None], agent: Agent[Any], data: str | list[TResponseInputItem]
        ) -> GuardrailFunctionOutput:
            return GuardrailFunctionOutput(output_info={"reason": "refund requested"}, tripwire_triggered=True)

        guardrails.append(no_refunds)

    model = _agents_model(base_url, chat=chat)
    agent: Agent[None] = Agent(
        name=AGENT,
        instructions="Answer questions about orders.",
        model=model,
        tools=[lookup],
        input_guardrails=guardrails,
    )

    async def main() -> BaseException | None:
        try:
            await Runner.run(agent, QUESTION, max_turns=2 if variant == "max_turns" else 10)
        except (MaxTurnsExceeded, InputGuardrailTripwireTriggered, APIStatusError) as exc:
            return exc
        finally:
            await model._client.close()
        return None

    return asyncio.run(main())


def _agents_turns(variant: str) -> list[StubTurn]:
    if variant == "max_turns":
        return [call(TOOL, ORDER_ARGS, call_id="call_a"), call(TOOL, ORDER_ARGS, call_id="call_b")]
    if variant == "guardrail":
        return []
    if variant == "model_error":
        return [fail(400, "scripted bad request")]
    return [call(TOOL, ORDER_ARGS, call_id="call_lookup_1"), say(ANSWER)]


def _chat_tool_roundtrip(client: Any, counter: list[int], run_tool: Callable[[str], str] = lookup_order) -> list[Any]:
    """Two chat completions by hand: the model calls the tool, ``run_tool`` runs it, the model answers."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": TOOL,
                "description": "Look up an order's status by its id.",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                },
            },
        }
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Answer questions about orders."},
        {"role": "user", "content": QUESTION},
    ]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    tool_call = first.choices[0].message.tool_calls[0]
    result = run_tool(str(json.loads(tool_call.function.arguments)["order_id"]))
    counter[0] += 1
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": result})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    return [first, second]


def _roundtrip_turns() -> list[StubTurn]:
    return [call(TOOL, ORDER_ARGS, call_id="call_lookup_1"), say(ANSWER)]


def _openai_client(base_url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)


def _run_langgraph(base_url: str, counter: list[int]) -> None:
    """A LangGraph ReAct agent (``create_react_agent``) on ``ChatOpenAI`` pointed at the stub, one tool."""
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    with warnings.catch_warnings():
        # create_react_agent moved to langchain.agents in LangGraph 1.0; it still works, with a warning.
        warnings.simplefilter("ignore", DeprecationWarning)
        from langgraph.prebuilt import create_react_agent

        @tool(TOOL)
        def lookup(order_id: str) -> str:
            """Look up an order's status by its id."""
            counter[0] += 1
            return lookup_order(order_id)

        model = ChatOpenAI(model=MODEL, base_url=base_url, api_key=API_KEY, max_retries=0)  # type: ignore[arg-type]
        graph = create_react_agent(model, [lookup], name=AGENT)
    graph.invoke(
        {"messages": [("user", QUESTION)]},
        config={"configurable": {"thread_id": "thread-1"}, "metadata": {"session_id": "session-1"}},
    )


# --- OpenInference --------------------------------------------------------------------------------


def openinference_agents(provider: TracerProvider, stub: OpenAIStub | None = None, variant: str = "tool") -> DialectRun:
    """The Agents SDK (Responses model) through OpenInference's ``OpenAIAgentsInstrumentor``.

    ``variant``: ``tool`` (one tool call, then the answer), ``max_turns`` (``max_turns=2``, the
    model keeps calling the tool: ``MaxTurnsExceeded``), ``guardrail`` (a blocking input guardrail
    trips before any model call: ``InputGuardrailTripwireTriggered``), ``model_error`` (the model
    answers HTTP 400: ``BadRequestError``).
    """
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    turns = _agents_turns(variant)
    counter = [0]
    with _scripted(stub, turns) as (live, first), _sdk_processors_restored():
        before = live.answered
        instrumentor = OpenAIAgentsInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            error = _run_agents(live.base_url, variant, counter=counter)
        finally:
            instrumentor.uninstrument()
        answered = live.answered - before
    return _summary("openinference", f"agents-{variant}", turns, first, answered, tool_calls=counter[0], error=error)


def openinference_langgraph(provider: TracerProvider, stub: OpenAIStub | None = None) -> DialectRun:
    """A LangGraph ReAct agent through OpenInference's ``LangChainInstrumentor``."""
    from openinference.instrumentation.langchain import LangChainInstrumentor

    turns = _roundtrip_turns()
    counter = [0]
    with _scripted(stub, turns) as (live, first):
        before = live.answered
        instrumentor = LangChainInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            _run_langgraph(live.base_url, counter)
        finally:
            instrumentor.uninstrument()
        answered = live.answered - before
    return _summary("openinference", "langgraph", turns, first, answered, tool_calls=counter[0])


# --- OpenTelemetry GenAI semantic conventions -----------------------------------------------------

_LATEST = {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}


def otel_genai_openai(
    provider: TracerProvider,
    stub: OpenAIStub | None = None,
    *,
    experimental: bool = False,
    content: bool = False,
    error: bool = False,
) -> DialectRun:
    """A chat tool-call roundtrip by hand on the ``openai`` client, through ``opentelemetry-instrumentation-openai-v2``.

    ``experimental``: ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` (the current
    conventions, through ``opentelemetry-util-genai``); else the instrumentation's default (legacy)
    path. ``content``: capture message content (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``;
    ``SPAN_ONLY`` in the experimental mode). ``error``: the model answers the first call with HTTP
    400 (``BadRequestError``, returned in ``DialectRun.error``; no tool call, no usage).
    """
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    env = dict(_LATEST) if experimental else {"OTEL_SEMCONV_STABILITY_OPT_IN": ""}
    if content:
        env["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY" if experimental else "true"
    from openai import APIStatusError

    turns = [fail(400, "scripted bad request")] if error else _roundtrip_turns()
    counter = [0]
    raised: BaseException | None = None
    with _scripted(stub, turns) as (live, first), _env(**env):
        before = live.answered
        instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
        instrumentor.instrument(tracer_provider=provider)
        try:
            client = _openai_client(live.base_url)
            with client:
                _chat_tool_roundtrip(client, counter)
        except APIStatusError as exc:
            raised = exc
        finally:
            instrumentor.uninstrument()
        answered = live.answered - before
    variant = ("latest" if experimental else "default") + ("-content" if content else "") + ("-error" if error else "")
    return _summary("otel-genai", f"openai-v2-{variant}", turns, first, answered, tool_calls=counter[0], error=raised)


def otel_genai_agent_helpers(provider: TracerProvider, stub: OpenAIStub | None = None) -> DialectRun:
    """``opentelemetry-util-genai``'s ``invoke_agent`` and ``execute_tool`` spans around openai-v2's chat spans.

    What an instrumentation built on the official helpers emits: ``invoke_agent support`` (INTERNAL)
    holding two ``chat`` spans (openai-v2, latest conventions) and an ``execute_tool lookup_order``.
    """
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.util.genai.handler import TelemetryHandler

    turns = _roundtrip_turns()
    counter = [0]
    with (
        _scripted(stub, turns) as (live, first),
        _env(**_LATEST, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_ONLY"),
    ):
        before = live.answered
        handler = TelemetryHandler(tracer_provider=provider)
        instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
        instrumentor.instrument(tracer_provider=provider)
        try:
            client = _openai_client(live.base_url)
            agent: Any = handler.invoke_local_agent(request_model=MODEL, agent_name=AGENT)
            with client, agent:
                agent.conversation_id = "conv-1"
                agent.agent_id = "agent-support-1"
                agent.agent_version = "1.2.0"
                responses = _tool_roundtrip_with_helper(client, handler, counter)
                agent.input_tokens = sum(r.usage.prompt_tokens for r in responses)
                agent.output_tokens = sum(r.usage.completion_tokens for r in responses)
        finally:
            instrumentor.uninstrument()
        answered = live.answered - before
    return _summary("otel-genai", "util-genai-agent", turns, first, answered, tool_calls=counter[0])


def _tool_roundtrip_with_helper(client: Any, handler: Any, counter: list[int]) -> list[Any]:
    def traced(order_id: str) -> str:
        with handler.tool(TOOL, tool_call_id="call_lookup_1", tool_type="function") as invocation:
            invocation.arguments = {"order_id": order_id}
            result = lookup_order(order_id)
            invocation.tool_result = result
            return result

    return _chat_tool_roundtrip(client, counter, traced)


# --- OpenLLMetry (Traceloop) ----------------------------------------------------------------------


def openllmetry(provider: TracerProvider, stub: OpenAIStub | None = None, variant: str = "openai") -> DialectRun:
    """OpenLLMetry's standalone instrumentations (``traceloop-sdk`` itself pins older OpenTelemetry).

    ``variant``: ``openai`` (the chat tool-call roundtrip by hand, ``opentelemetry-instrumentation-openai``),
    ``langgraph`` (the ReAct agent, ``opentelemetry-instrumentation-langchain``), ``agents`` (the Agents
    SDK run, ``opentelemetry-instrumentation-openai-agents``; ``agents-max_turns``, ``agents-guardrail``
    and ``agents-model_error`` as in ``openinference_agents``).
    """
    counter = [0]
    error: BaseException | None = None
    agents_variant = variant.partition("-")[2] or "tool"
    turns = _agents_turns(agents_variant) if variant.startswith("agents") else _roundtrip_turns()
    with (
        _scripted(stub, turns) as (live, first),
        _env(TRACELOOP_TRACE_CONTENT="true", TRACELOOP_TELEMETRY="false"),
        _sdk_processors_restored(),
    ):
        before = live.answered
        if variant == "openai":
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor

            openai_instrumentor = OpenAIInstrumentor()
            with warnings.catch_warnings():
                # its Responses wrappers declare a class-based pydantic ``Config`` (deprecated) on import
                warnings.simplefilter("ignore", DeprecationWarning)
                openai_instrumentor.instrument(tracer_provider=provider)
            try:
                client = _openai_client(live.base_url)
                with client:
                    _chat_tool_roundtrip(client, counter)
            finally:
                openai_instrumentor.uninstrument()
                _unwrap_leftovers("opentelemetry.instrumentation.openai.", "openai.")
        elif variant == "langgraph":
            from opentelemetry.instrumentation.langchain import LangchainInstrumentor

            langchain_instrumentor = LangchainInstrumentor()
            langchain_instrumentor.instrument(tracer_provider=provider)
            try:
                _run_langgraph(live.base_url, counter)
            finally:
                langchain_instrumentor.uninstrument()
                _unwrap_leftovers("opentelemetry.instrumentation.langchain", "langchain_core.", "langgraph.", "openai.")
        else:
            from opentelemetry.instrumentation.openai_agents import OpenAIAgentsInstrumentor

            agents_instrumentor = OpenAIAgentsInstrumentor()
            agents_instrumentor.instrument(tracer_provider=provider)
            try:
                error = _run_agents(live.base_url, agents_variant, counter=counter)
            finally:
                agents_instrumentor.uninstrument()
        answered = live.answered - before
    return _summary("openllmetry", variant, turns, first, answered, tool_calls=counter[0], error=error)


# --- OpenLIT --------------------------------------------------------------------------------------


def openlit_run(provider: TracerProvider, stub: OpenAIStub | None = None, variant: str = "openai") -> DialectRun:
    """OpenLIT (needs ``openlit`` installed; it is not in the test extras, see the module docstring).

    ``variant``: ``openai`` (the chat tool-call roundtrip by hand), ``agents`` (the Agents SDK run,
    plus OpenLIT's ``openai-agents`` instrumentor; ``agents-max_turns``, ``agents-guardrail``,
    ``agents-model_error`` as in ``openinference_agents``), ``langgraph`` (the ReAct agent, plus its
    ``langchain`` and ``langgraph`` instrumentors). ``openlit.init`` takes no tracer provider: it
    uses the global one, so ``provider`` is installed as the global provider when none is set yet
    (else ``provider`` must already be the global one). Every other instrumentor OpenLIT knows is
    disabled (it would patch httpx, requests, ...), its price list is a local file (else it is
    fetched over the network), no metrics, no GPU stats. Its instrumentors' ``uninstrument`` does
    nothing, so their patches are taken off by hand afterwards.
    """
    import tempfile

    from opentelemetry import trace

    openlit = importlib.import_module("openlit")
    known: dict[str, str] = importlib.import_module("openlit._instrumentors").MODULE_NAME_MAP
    wanted = {
        "openai": {"openai"},
        "agents": {"openai", "openai-agents"},
        "langgraph": {"openai", "langchain", "langgraph"},
    }
    agents_variant = variant.partition("-")[2] or "tool"
    enabled = wanted[variant.partition("-")[0]]
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        raise RuntimeError("openlit only uses the global tracer provider, and another one is installed")
    turns = _agents_turns(agents_variant) if variant.startswith("agents") else _roundtrip_turns()
    counter = [0]
    error: BaseException | None = None
    with (
        tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as pricing,
        _scripted(stub, turns) as (live, first),
        _env(OPENLIT_DISABLE_TELEMETRY="true"),
        _sdk_processors_restored(),
    ):
        json.dump({"chat": {MODEL: {"promptPrice": 0.00015, "completionPrice": 0.0006}}}, pricing)
        pricing.flush()
        before = live.answered
        openlit.init(
            application_name=AGENT,
            environment="test",
            disable_batch=True,
            disable_metrics=True,
            disable_events=True,
            collect_gpu_stats=False,
            pricing_json=pricing.name,
            capture_message_content=True,
            disabled_instrumentors=sorted(set(known) - enabled),
        )
        try:
            if variant == "openai":
                client = _openai_client(live.base_url)
                with client:
                    _chat_tool_roundtrip(client, counter)
            elif variant.startswith("agents"):
                error = _run_agents(live.base_url, agents_variant, counter=counter)
            else:
                _run_langgraph(live.base_url, counter)
        finally:
            _unwrap_leftovers("openlit", "openai.", "agents.", "langchain_core.", "langgraph.")
        answered = live.answered - before
    os.unlink(pricing.name)
    return _summary("openlit", variant, turns, first, answered, tool_calls=counter[0], error=error)


# --- double counting: agentwatch with a foreign instrumentation ------------------------------------


def agentwatch_with_otel_genai(
    provider: TracerProvider, stub: OpenAIStub | None = None, variant: str = "manual"
) -> DialectRun:
    """agentwatch and ``opentelemetry-instrumentation-openai-v2`` in one process: each LLM call described twice.

    ``manual``: an ``agent_run`` whose two chat calls on the (instrumented) ``openai`` client are
    also recorded with ``run.record_llm_call`` and whose tool goes through the gateway.
    ``agents``: the Agents SDK on its Chat Completions model, through agentwatch's integration
    (``agentwatch.instrumentation.integrations.openai_agents``) and openai-v2.
    """
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    from agentwatch.instrumentation import Policy, ToolGateway, agent_run, configure, reset_configuration
    from agentwatch.instrumentation.integrations import openai_agents

    turns = _roundtrip_turns()
    counter = [0]
    error: BaseException | None = None
    with _scripted(stub, turns) as (live, first), _sdk_processors_restored():
        before = live.answered
        configure(tracer_provider=provider, set_global=False)
        instrumentor = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
        instrumentor.instrument(tracer_provider=provider)
        try:
            if variant == "manual":

                def tool_impl(order_id: str) -> str:
                    counter[0] += 1
                    return lookup_order(order_id)

                gateway = ToolGateway(policy=Policy(allow=[TOOL]), tools={TOOL: tool_impl})
                client = _openai_client(live.base_url)
                with client, agent_run(AGENT, gateway=gateway, tracer_provider=provider) as run:
                    responses = _chat_tool_roundtrip_governed(client, run)
                    for response in responses:
                        details = response.usage.prompt_tokens_details
                        run.record_llm_call(
                            model=MODEL,
                            provider="openai",
                            input_tokens=response.usage.prompt_tokens,
                            output_tokens=response.usage.completion_tokens,
                            cached_input_tokens=details.cached_tokens if details else 0,
                            response_model=response.model,
                            finish_reasons=[c.finish_reason for c in response.choices],
                            response_id=response.id,
                        )
            else:
                openai_agents.instrument(tracer_provider=provider)
                try:
                    error = _run_agents(live.base_url, "tool", chat=True, counter=counter)
                finally:
                    openai_agents.uninstrument()
        finally:
            instrumentor.uninstrument()
            reset_configuration()
        answered = live.answered - before
    return _summary("agentwatch+otel-genai", variant, turns, first, answered, tool_calls=counter[0], error=error)


def _chat_tool_roundtrip_governed(client: Any, run: Any) -> list[Any]:
    """``_chat_tool_roundtrip`` with the tool called through the run's gateway, inside one step."""

    def governed(order_id: str) -> str:
        return str(run.call_tool(TOOL, {"order_id": order_id}))

    with run.step():
        return _chat_tool_roundtrip(client, [0], governed)


def agentwatch_with_openinference(provider: TracerProvider, stub: OpenAIStub | None = None) -> DialectRun:
    """agentwatch's Agents SDK integration and OpenInference's ``OpenAIAgentsInstrumentor`` on one run."""
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    from agentwatch.instrumentation import configure, reset_configuration
    from agentwatch.instrumentation.integrations import openai_agents

    turns = _agents_turns("tool")
    counter = [0]
    with _scripted(stub, turns) as (live, first), _sdk_processors_restored():
        before = live.answered
        configure(tracer_provider=provider, set_global=False)
        openai_agents.instrument(tracer_provider=provider)
        instrumentor = OpenAIAgentsInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            error = _run_agents(live.base_url, "tool", counter=counter)
        finally:
            instrumentor.uninstrument()
            openai_agents.uninstrument()
            reset_configuration()
        answered = live.answered - before
    return _summary("agentwatch+openinference", "agents", turns, first, answered, tool_calls=counter[0], error=error)
