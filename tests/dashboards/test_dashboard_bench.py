"""The dashboard-query benchmark on a small store: its generated spans look like the instrumentation's, and
every dashboard SQL query runs on them.

The benchmark runs as a child process (chDB hosts one engine path per process), as ``make bench``
runs it, and a second child reads its store back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from _paths import REPO
from _readdata import fleet

from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

ROOT = REPO
BENCHMARK = ROOT / "benchmarks" / "dashboard_queries.py"
SPANS = 20_000

READ_KEYS = """
import json, sys
from agentwatch.collectors.store.clickhouse import ClickHouseStore

store = ClickHouseStore.open("chdb://" + sys.argv[1])
rows = store.query(
    "SELECT if(SpanAttributes['agentwatch.operation.name'] != '', SpanAttributes['agentwatch.operation.name'], "
    "SpanAttributes['gen_ai.operation.name']) AS op, groupUniqArrayArray(mapKeys(SpanAttributes)) AS keys, "
    "groupUniqArray(SpanAttributes['agentwatch.stop_reason']) AS reasons, "
    "groupUniqArray(SpanAttributes['agentwatch.tool.disposition']) AS dispositions FROM otel_traces GROUP BY op"
)
runs = store.query("SELECT count() AS runs, countIf(StopReason = '') AS unnamed FROM agent_runs")
print(json.dumps({"ops": rows, "runs": runs[0]}, default=str))
store.close()
"""


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_benchmark_generates_instrumentation_shaped_spans_and_runs_every_query(tmp_path: Path) -> None:
    data = tmp_path / "store"
    figures = json.loads(_run(str(BENCHMARK), "--spans", str(SPANS), "--repeat", "1", "--json", "--data", str(data)))
    assert figures["spans"] == SPANS
    assert 0 < figures["runs"] < SPANS
    assert figures["tool_calls"] > figures["runs"]  # most runs call tools
    panels = {(q["dashboard"], q["panel"]) for q in figures["queries"]}
    assert {"agentwatch-runs", "agentwatch-tools"} <= {dashboard for dashboard, _ in panels}
    assert all(q["p50_ms"] > 0 for q in figures["queries"])

    stored = json.loads(_run("-c", READ_KEYS, str(data)))
    assert stored["runs"] == {"runs": figures["runs"], "unnamed": 0}
    generated = {row["op"]: set(row["keys"]) for row in stored["ops"]}
    real: dict[str, set[str]] = defaultdict(set)
    for row in fleet().rows:
        attributes = row["SpanAttributes"]
        assert isinstance(attributes, dict)
        real[semconv.span_operation(attributes)].update(attributes)  # steps: agentwatch.operation.name
    assert set(generated) == set(real)
    for operation, keys in real.items():
        assert keys <= generated[operation], f"{operation}: the instrumentation also sets {keys - generated[operation]}"

    by_op = {row["op"]: row for row in stored["ops"]}
    assert set(by_op[semconv.OP_INVOKE_AGENT]["reasons"]) == set(semconv.STOP_REASONS)
    assert set(by_op[semconv.OP_EXECUTE_TOOL]["dispositions"]) == {
        # replayed: replay's gateway only; ungoverned: set by the collector on other dialects' tool calls
        d.value
        for d in semconv.ToolDisposition
        if d not in (semconv.ToolDisposition.REPLAYED, semconv.ToolDisposition.UNGOVERNED)
    }
