"""OTLP conversion throughput: spans/s for parse + convert + encode, with and without redaction.

Two workloads of realistic agent spans, sent as the SDK sends them (its own OTLP encoder, batches
of 512 spans):

- ``scenarios``: ``examples/custom_agent.py``'s five tickets run over and over through
  ``agentwatch.instrumentation`` (run, step, LLM and tool spans; about 11 short attributes each);
- ``varied``: agent spans written with the OTel SDK where every run, call and response id and
  every token count and cost is new: the worst realistic case for the collector's memos;
- ``varied+content``: the same with content capture on for one tool call in four (one span in
  eight), 0.5-2 KB of tool arguments and results each, some with an e-mail address or an API key.

Each figure is the median of repeats, and every repeat starts with empty memos (a new
``Redactor``), so a workload pays for the first sight of each value as a running collector
would. Ratios are against a baseline measured in the same run: parsing the body alone, the one
step that no OTLP receiver can skip. The collector's target is 50k spans/s end to end on two
cores; conversion alone is meant to reach 100k spans/s on one core with redaction on.

Run with ``python benchmarks/otlp_convert.py [--json]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from agentwatch.collectors.ingest import otlp, otlp_memos
from agentwatch.instrumentation import RunAttributesSpanProcessor, semconv
from agentwatch.instrumentation.redaction import Redactor

BATCH = 512  # BatchSpanProcessor's default max_export_batch_size
CONVERT_TARGET_SPANS_PER_S = 100_000
RESOURCE = {
    "service.name": "support-agent",
    "service.version": "1.4.2",
    "deployment.environment.name": "prod",
    "host.name": "agent-7f9c6d-2xk4q",
}


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    provider.add_span_processor(RunAttributesSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def scenario_spans(rounds: int) -> list[ReadableSpan]:
    """``examples/custom_agent.py``'s tickets, ``rounds`` times, through the real instrumentation."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import custom_agent  # type: ignore[import-not-found]  # an example script, not a package

    provider, exporter = _provider()
    for _ in range(rounds):
        custom_agent.run_scenarios(tracer_provider=provider)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _content(rng: random.Random) -> str:
    rows = [{"id": rng.randrange(10**6), "title": f"Article {rng.randrange(999)}", "score": rng.random()}]
    text = json.dumps({"query": "refund policy for order " + str(rng.randrange(10**5)), "results": rows * 8})
    if rng.random() < 0.2:
        text += " contact: jane.doe@example.com"
    if rng.random() < 0.1:
        text += " key=sk-proj-Xq7LmN2pR8sT4vW6yZ1aB3cD5eF7gH9jK0lM2nP4qR6sT8"
    return text[: rng.randrange(500, 2000)]


def varied_spans(runs: int, *, content_share: float, seed: int = 1) -> list[ReadableSpan]:
    """Agent runs written with the OTel SDK, every id and number fresh; ``content_share`` of the
    tool calls capture their arguments and result."""
    rng = random.Random(seed)
    provider, exporter = _provider()
    tracer = provider.get_tracer(semconv.INSTRUMENTATION_SCOPE, "0.1.0")
    for run_index in range(runs):
        run_id = f"{rng.getrandbits(128):032x}"
        agent = rng.choice(["support", "billing", "triage"])
        common: dict[str, AttributeValue] = {
            semconv.RUN_ID: run_id,
            semconv.GEN_AI_AGENT_NAME: agent,
            semconv.TENANT_ID: f"tenant-{run_index % 7}",
            semconv.TRACK: rng.choice(["stable", "stable", "canary"]),
        }
        with tracer.start_as_current_span(semconv.run_span_name(agent), attributes=common) as run_span:
            steps = rng.randint(1, 6)
            for step in range(steps):
                step_attributes: dict[str, AttributeValue] = {
                    **common,
                    semconv.OPERATION_NAME: semconv.OP_STEP,
                    semconv.STEP_INDEX: step,
                }
                with tracer.start_as_current_span(semconv.step_span_name(agent), attributes=step_attributes):
                    llm: dict[str, AttributeValue] = {
                        **step_attributes,
                        semconv.GEN_AI_OPERATION_NAME: semconv.OP_CHAT,
                        semconv.GEN_AI_PROVIDER_NAME: "openai",
                        semconv.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
                        semconv.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
                        semconv.GEN_AI_RESPONSE_ID: f"chatcmpl-{rng.getrandbits(96):024x}",
                        semconv.GEN_AI_USAGE_INPUT_TOKENS: rng.randint(300, 9000),
                        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: rng.randint(10, 900),
                        semconv.GEN_AI_RESPONSE_FINISH_REASONS: (rng.choice(["stop", "tool_calls"]),),
                        semconv.COST_USD: rng.random() / 100,
                    }
                    with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes=llm):
                        pass
                    tool = rng.choice(["kb.search", "orders.lookup", "ticket.close"])
                    call: dict[str, AttributeValue] = {
                        **step_attributes,
                        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
                        semconv.GEN_AI_TOOL_NAME: tool,
                        semconv.GEN_AI_TOOL_CALL_ID: f"call_{rng.getrandbits(64):016x}",
                        semconv.GEN_AI_TOOL_TYPE: "function",
                        semconv.TOOL_DISPOSITION: "allowed",
                        semconv.TOOL_OUTCOME: "ok",
                        semconv.TOOL_RISK: "read",
                        semconv.POLICY_RULE: f"allow:{tool}",
                    }
                    if rng.random() < content_share:
                        call[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = _content(rng)
                        call[semconv.GEN_AI_TOOL_CALL_RESULT] = _content(rng)
                    with tracer.start_as_current_span(semconv.tool_span_name(tool), attributes=call) as tool_span:
                        if rng.random() < 0.05:
                            tool_span.set_status(Status(StatusCode.ERROR, "TimeoutError: upstream took 30s"))
            run_span.set_attributes(
                {
                    semconv.GEN_AI_OPERATION_NAME: semconv.OP_INVOKE_AGENT,
                    semconv.STOP_REASON: "completed",
                    semconv.RUN_STEPS: steps,
                    semconv.RUN_TOOL_CALLS: steps,
                    semconv.RUN_LLM_CALLS: steps,
                    semconv.RUN_COST_USD: rng.random() / 10,
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: rng.randint(1000, 40000),
                    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: rng.randint(100, 4000),
                }
            )
    provider.shutdown()
    return list(exporter.get_finished_spans())


def bodies_of(spans: Sequence[ReadableSpan]) -> list[bytes]:
    return [encode_spans(spans[i : i + BATCH]).SerializeToString() for i in range(0, len(spans), BATCH)]


def _median_spans_per_s(step: Callable[[], None], spans: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        otlp_memos._PLAIN_MEMOS.clear()  # every repeat starts cold, as a freshly started collector would
        gc.collect()
        started = time.perf_counter()
        step()
        samples.append(spans / (time.perf_counter() - started))
    return statistics.median(samples)


def measure(bodies: Sequence[bytes], repeats: int) -> dict[str, float]:
    spans = sum(otlp.span_count(otlp.parse_protobuf(body)) for body in bodies)
    limits = otlp.Limits()
    parsed: list[ExportTraceServiceRequest] = [otlp.parse_protobuf(body) for body in bodies]

    def parse_only() -> None:
        for body in bodies:
            otlp.parse_protobuf(body)

    def pipeline(redact: bool, encode: bool) -> Callable[[], None]:
        def step() -> None:
            redactor = Redactor() if redact else None  # a new redactor: empty memos
            for body in bodies:
                # as the collector does it: the body is read again rather than re-serialized
                request = otlp.parse_protobuf(body)
                converted = otlp.convert(request, tenant="acme", limits=limits, redactor=redactor, wire=body)
                if encode:
                    converted.payload()

        return step

    def convert_only() -> None:
        redactor = Redactor()
        for request, body in zip(parsed, bodies, strict=True):
            otlp.convert(request, tenant="acme", limits=limits, redactor=redactor, wire=body)

    results = {"spans": float(spans)}
    results["parse_only"] = _median_spans_per_s(parse_only, spans, repeats)
    results["parse_convert_encode"] = _median_spans_per_s(pipeline(False, True), spans, repeats)
    results["parse_convert_encode_redacted"] = _median_spans_per_s(pipeline(True, True), spans, repeats)
    results["parse_convert_redacted"] = _median_spans_per_s(pipeline(True, False), spans, repeats)
    results["convert_redacted"] = _median_spans_per_s(convert_only, spans, repeats)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=80, help="rounds of the five example tickets")
    parser.add_argument("--runs", type=int, default=600, help="runs in the varied workload")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    workloads = {
        "scenarios": bodies_of(scenario_spans(args.rounds)),
        "varied": bodies_of(varied_spans(args.runs, content_share=0.0)),
        "varied+content": bodies_of(varied_spans(args.runs, content_share=0.25)),
    }
    report: dict[str, Any] = {name: measure(bodies, args.repeats) for name, bodies in workloads.items()}
    for figures in report.values():
        figures["convert_redacted_meets_target"] = figures["convert_redacted"] >= CONVERT_TARGET_SPANS_PER_S
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("OTLP conversion throughput (median of repeats, cold memos each repeat, one core, this machine)")
    labels = {
        "parse_only": "parse (baseline)",
        "parse_convert_encode": "parse + convert + encode",
        "parse_convert_encode_redacted": "parse + convert + encode, redacted",
        "parse_convert_redacted": "parse + convert, redacted",
        "convert_redacted": "convert alone, redacted",
    }
    for name, figures in report.items():
        print(f"  {name} ({int(figures['spans'])} spans in batches of {BATCH})")
        baseline = figures["parse_only"]
        for key, label in labels.items():
            rate = figures[key]
            print(f"    {label:<38} {rate / 1e3:8.1f}k spans/s   {baseline / rate:6.1f}x the baseline's time")
    missed = [name for name, figures in report.items() if not figures["convert_redacted_meets_target"]]
    target = f"convert alone, redacted >= {CONVERT_TARGET_SPANS_PER_S // 1000}k spans/s"
    print(f"target ({target}): " + ("met" if not missed else "MISSED in " + ", ".join(missed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
