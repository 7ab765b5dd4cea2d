"""The ``agentwatch`` command line: one subcommand per job, readable output, ``--json`` for machines."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict


def _demo(args: argparse.Namespace) -> int:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentwatch.collectors._examples import load_example
    from agentwatch.collectors.summary import render, summarize

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    example = load_example("custom_agent")
    example.run_scenarios(tracer_provider=provider)
    provider.shutdown()
    summary = summarize(exporter.get_finished_spans())
    if args.json:
        print(
            json.dumps(
                {
                    "runs": [asdict(run) for run in summary.runs],
                    "gateway": [
                        {"tool": t, "disposition": d, "outcome": o, "calls": n}
                        for (t, d, o), n in sorted(summary.gateway.items())
                    ],
                },
                indent=2,
            )
        )
    else:
        print("agentwatch demo: the custom-loop support agent on five tickets\n")
        print(render(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentwatch", description="Observability and governance for LLM agents.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="run the example agents and print what the telemetry shows")
    demo.add_argument("--json", action="store_true", help="machine-readable output")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
