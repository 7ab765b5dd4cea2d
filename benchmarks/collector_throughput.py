"""Collector throughput: realistic agent traces through ``agentwatch collector``, end to end, with zero loss.

The traffic is the example fleet (``examples/fleet.py``: the support agent on a stable and a canary
release), recorded once with the real instrumentation and encoded as OTLP export requests of about
``--batch-spans`` spans each, as a ``BatchSpanProcessor`` sends them. Every request on the wire is a
unique copy of one of those templates: trace ids, span ids, parent span ids and run ids are
rewritten per copy (the collector drops a request it has already spooled, and loss is checked by
distinct ``(TraceId, SpanId)``). Copies are made in the client processes before the clock starts.

Measured in the same run, on the same bodies:

- end to end: ``agentwatch collector`` as a child process on a fresh embedded store (chDB), ``--clients``
  client processes POSTing protobuf over keep-alive connections (429/503 are retried after
  ``Retry-After``), from the first send until ``agentwatch_collector_spans_written_total`` counts
  every span; then SIGTERM, and the store is checked from another process: rows == distinct
  (TraceId, SpanId) == spans sent, and one ``agent_runs`` row per run sent. Collector CPU seconds
  (``/proc``, with children) and peak RSS (``VmHWM``) come with it;
- decode only: ``parse_protobuf`` + ``convert`` (default ``Redactor``) + its JSONEachRow payload, one thread;
- pipeline only: ``Pipeline.export`` on a real fsynced spool and metrics, no HTTP and no insert, one thread;
- insert only: ``ClickHouseStore.insert_json_rows`` of JSONEachRow payloads of the writer's observed
  batch size, in a child process on a fresh chDB store (chDB hosts one engine path per process);
- baseline: the same bodies POSTed by the same clients to a bare Starlette app on uvicorn that only
  reads the body (the HTTP stack the collector runs on, with nothing behind it).

``--soak SECONDS`` then runs a fresh collector at half the end-to-end rate for SECONDS, samples its
RSS every 10 s, and fails if RSS grows more than 10% from the one-minute mark to the end.
``--profile FILE`` runs the end-to-end collector under cProfile in every thread (``-m cProfile``
only sees the main thread, which just waits) and prints the top functions.

Targets (2 cores): >= 50,000 spans/s end to end, zero loss, zero duplicates, peak RSS <= 1 GiB.
Exit status 1 on loss, duplicates or soak growth (and, with ``--strict``, on a missed target).

Run with ``.venv/bin/python benchmarks/collector_throughput.py [--spans N] [--clients C] [--soak S] [--json]``.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.instrumentation import semconv

TARGET_SPANS_PER_S = 50_000
TARGET_PEAK_RSS_BYTES = 1 << 30
SOAK_GROWTH_LIMIT = 0.10
SOAK_SAMPLE_S = 10.0
SOAK_BASELINE_S = 60.0  # RSS growth is measured from here: startup and first merges are not a leak
SERVICE_NAME = "support-agent"
PROTOBUF = "application/x-protobuf"
GZIP_LEVEL = 1  # client CPU is not what is measured; the collector's inflate cost hardly depends on it
POLL_S = 0.05  # once the clients are done: the end of the run is seen within this
SENDING_POLL_S = 0.5  # while they send: each poll costs the collector a scrape (a thread, ~2 ms of GIL)
STALL_TIMEOUT_S = 60.0
MIB = 1 << 20

# --- traffic ---------------------------------------------------------------------------------------


def fleet_templates(runs: int, batch_spans: int) -> list[bytes]:
    """Run the example fleet with the real instrumentation; encode its spans as export requests.

    Requests hold whole traces (about ``batch_spans`` spans each), so every copy made from a
    template is a set of complete runs.
    """
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentwatch.collectors._examples import load_example
    from agentwatch.instrumentation import RunAttributesSpanProcessor

    fleet = load_example("fleet")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(RunAttributesSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fleet.simulate(runs // 2, fleet.STABLE, tracer_provider=provider)
    fleet.simulate(runs - runs // 2, fleet.CANARY, tracer_provider=provider)
    provider.shutdown()
    traces: dict[int, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():  # in finish order, as a batch processor sees them
        assert span.context is not None
        traces.setdefault(span.context.trace_id, []).append(span)
    total = sum(len(spans) for spans in traces.values())
    per_request = total / max(1, round(total / batch_spans))  # even requests, none a small remainder
    templates: list[bytes] = []
    chunk: list[ReadableSpan] = []
    for spans in traces.values():
        chunk.extend(spans)
        if len(chunk) >= per_request:
            templates.append(encode_spans(chunk).SerializeToString())
            chunk = []
    if chunk:
        templates.append(encode_spans(chunk).SerializeToString())
    return templates


def _xor_prefix(span_id: bytes, key: int) -> bytes:
    return (int.from_bytes(span_id[:4], "big") ^ key).to_bytes(4, "big") + span_id[4:]


@dataclass
class _Template:
    request: ExportTraceServiceRequest
    # per span: the message, and its original trace, span and parent ids
    spans: list[tuple[Any, bytes, bytes, bytes]]
    # every agentwatch.run.id value message, and its original text
    run_ids: list[tuple[Any, str]]
    runs: int  # invoke_agent spans: one agent_runs row each


class BodyFactory:
    """Unique copies of the templates: body ``index`` is template ``index % T`` with ids no other body has.

    The trace id's first 4 bytes become ``index`` (trace ids of the templates differ in their other
    12 bytes, checked here), span and parent ids have their first 4 bytes XORed with ``index`` (a
    bijection, so parents still point at their spans), and run ids start with ``index`` in hex.
    """

    def __init__(self, templates: Sequence[bytes]) -> None:
        self.templates = [self._load(data) for data in templates]
        tails = {tid[4:] for t in self.templates for _, tid, _, _ in t.spans}
        traces = {tid for t in self.templates for _, tid, _, _ in t.spans}
        if len(tails) != len(traces):
            raise RuntimeError("template trace ids collide outside their first 4 bytes; rerun with another seed")

    @staticmethod
    def _load(data: bytes) -> _Template:
        request = ExportTraceServiceRequest.FromString(data)
        spans: list[tuple[Any, bytes, bytes, bytes]] = []
        run_ids: list[tuple[Any, str]] = []
        runs = 0
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    spans.append((span, span.trace_id, span.span_id, span.parent_span_id))
                    for item in span.attributes:
                        if item.key == semconv.RUN_ID:
                            run_ids.append((item.value, item.value.string_value))
                        elif item.key == semconv.GEN_AI_OPERATION_NAME:
                            runs += item.value.string_value == semconv.OP_INVOKE_AGENT
        return _Template(request, spans, run_ids, runs)

    def spans(self, index: int) -> int:
        return len(self.templates[index % len(self.templates)].spans)

    def runs(self, index: int) -> int:
        return self.templates[index % len(self.templates)].runs

    def body(self, index: int) -> bytes:
        template = self.templates[index % len(self.templates)]
        prefix = struct.pack(">I", index)
        for span, trace_id, span_id, parent in template.spans:
            span.trace_id = prefix + trace_id[4:]
            span.span_id = _xor_prefix(span_id, index)
            if parent:
                span.parent_span_id = _xor_prefix(parent, index)
        run_prefix = f"{index:08x}"
        for value, original in template.run_ids:
            value.string_value = run_prefix + original[8:]
        body: bytes = template.request.SerializeToString()
        return body


@dataclass(frozen=True)
class Plan:
    """Bodies ``0 .. bodies-1``: enough whole requests for at least the asked number of spans."""

    bodies: int
    spans: int
    runs: int


def make_plan(factory: BodyFactory, spans: int) -> Plan:
    bodies = total = runs = 0
    while total < spans:
        total += factory.spans(bodies)
        runs += factory.runs(bodies)
        bodies += 1
    return Plan(bodies, total, runs)


# --- /proc -----------------------------------------------------------------------------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(path: Path) -> list[str]:
    text = path.read_text()
    return text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid``, in seconds."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return sum(int(value) for value in fields[11:15]) / _TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (``/proc/stat``, all cores)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def status_bytes(pid: int, key: str) -> int:
    """A ``kB`` line of ``/proc/PID/status`` (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds per thread id, with the thread's name."""
    threads: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = _stat_fields(task / "stat")
        except OSError:
            continue  # the thread ended meanwhile
        threads[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return threads


def thread_breakdown(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> list[dict[str, Any]]:
    """CPU per thread name over a window, busiest first (same-named threads summed)."""
    used: dict[str, float] = defaultdict(float)
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        if spent > 0:
            used[name] += spent
    return [{"thread": name, "cpu_s": round(seconds, 2)} for name, seconds in sorted(used.items(), key=lambda x: -x[1])]


# --- child processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


# The collector's entry point, run with each thread's OS name set to its Python name (so /proc
# can tell the HTTP loop, the workers, the writer and chDB's threads apart) and, given a file
# name in argv[1], every thread under cProfile: ``python -m cProfile`` only sees the main thread,
# which just waits.
_COLLECTOR_MAIN = """
import ctypes, sys, threading
profile_path = sys.argv[1]
profiles = []
libc = ctypes.CDLL(None)
original = threading.Thread._bootstrap_inner  # every thread runs this, whatever its class overrides
def bootstrap(self):
    libc.prctl(15, self.name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    if not profile_path:
        return original(self)
    import cProfile
    profile = cProfile.Profile()
    profiles.append(profile)
    profile.enable()
    try:
        original(self)
    finally:
        profile.disable()
threading.Thread._bootstrap_inner = bootstrap
from agentwatch.collectors.cli.main import main
try:
    code = main(sys.argv[2:])
finally:
    if profiles:
        # read each thread's profile without disabling it from this thread, then merge them
        import marshal, pstats, tempfile
        merged = None
        for profile in profiles:
            profile.snapshot_stats()
            with tempfile.NamedTemporaryFile(suffix=".prof") as file:
                marshal.dump(profile.stats, file)
                file.flush()
                if merged is None:
                    merged = pstats.Stats(file.name)
                else:
                    merged.add(file.name)
        merged.dump_stats(profile_path)
sys.exit(code)
"""


@dataclass
class Collector:
    """``agentwatch collector`` as a child process on an embedded store in ``workdir``."""

    workdir: Path
    profile: Path | None = None
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def store_path(self) -> Path:
        return self.workdir / "clickhouse"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 120.0) -> Collector:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cli = [
            "collector",
            "--clickhouse",
            f"chdb://{self.store_path}",
            "--spool",
            str(self.workdir / "spool"),
            "--otlp-http",
            f"127.0.0.1:{self.http_port}",
            "--otlp-grpc",
            "",
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
        ]
        args = [sys.executable, "-c", _COLLECTOR_MAIN, str(self.profile or ""), *cli]
        with (self.workdir / "collector.log").open("ab") as log:
            self.process = subprocess.Popen(args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if http_get(self.http_port, "/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"collector not ready within {timeout_s}s:\n{self.log_tail()}")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"collector exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        path = self.workdir / "collector.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def metrics(self) -> dict[str, float]:
        self._check_alive()
        status, body = http_get(self.metrics_port, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM: the collector drains its spool and closes the store."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → value per sample name (``_total``, ``_sum``, ``_count`` kept), summed over label sets."""
    values: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] += sample.value
    return dict(values)


_VERIFY_SCRIPT = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
rows, distinct = client.query("SELECT count(), uniqExact(TraceId, SpanId) FROM otel_traces").result_rows[0]
runs = client.command("SELECT count() FROM agent_runs")
print(json.dumps({"rows": int(rows), "distinct": int(distinct), "runs": int(runs)}))
"""

_INSERT_SCRIPT = """
import json, sys, time
from pathlib import Path
from agentwatch.collectors.store.clickhouse import ClickHouseStore
store = ClickHouseStore.open("chdb://" + sys.argv[1])
store.ensure_schema()
seconds = spans = 0
for index, item in enumerate(json.loads(Path(sys.argv[2]).read_text())):
    payload = Path(item["path"]).read_bytes()
    started = time.perf_counter()
    store.insert_json_rows("otel_traces", payload, dedup_token=f"bench-{index}")
    seconds += time.perf_counter() - started
    spans += item["spans"]
store.close()
print(json.dumps({"spans": spans, "seconds": seconds}))
"""

_BASELINE_SERVER = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def sink(request):
    async for _chunk in request.stream():
        pass
    return Response(b"", media_type="application/x-protobuf")

async def healthz(_request):
    return Response(b"ok")

app = Starlette(routes=[Route("/v1/traces", sink, methods=["POST"]), Route("/readyz", healthz)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            lifespan="off", timeout_keep_alive=30)
"""


def run_json_child(script: str, *args: str, timeout_s: float = 600.0) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def verify_store(path: Path) -> dict[str, Any]:
    """Counts read from the stopped collector's store, in a child (chDB: one engine path per process)."""
    return run_json_child(_VERIFY_SCRIPT, str(path))


# --- clients ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientJob:
    """What one client process sends: its share of bodies (fixed) or paced bodies for a while (soak)."""

    client: int
    clients: int
    templates: list[bytes]
    port: int
    gzip: bool
    bodies: int = 0  # fixed mode: bodies client, client + clients, ... below this
    rate: float = 0.0  # paced mode: this client's spans/s
    duration_s: float = 0.0
    first_index: int = 0


@dataclass
class ClientResult:
    client: int
    spans: int = 0  # acknowledged with 200
    rejected: int = 0  # partial_success.rejected_spans
    requests: int = 0
    retries: int = 0  # 429/503 and connection errors, each retried with the same body
    failures: list[str] = field(default_factory=list)  # other statuses: those spans are lost
    latencies: list[float] = field(default_factory=list)
    runs: int = 0
    prepare_s: float = 0.0
    first_send: float = 0.0
    last_ack: float = 0.0
    cpu_s: float = 0.0


class _Sender:
    """One keep-alive connection; POSTs a body until it is acknowledged (or refused for good)."""

    def __init__(self, port: int, *, gzip: bool, result: ClientResult) -> None:
        self.port = port
        self.headers = {"Content-Type": PROTOBUF, **({"Content-Encoding": "gzip"} if gzip else {})}
        self.result = result
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def post(self, body: bytes, spans: int) -> bool:
        result = self.result
        for _ in range(1000):
            started = time.perf_counter()
            try:
                self.conn.request("POST", "/v1/traces", body, self.headers)
                response = self.conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
                result.retries += 1
                time.sleep(0.1)
                continue
            result.requests += 1
            if response.status in (429, 503):
                result.retries += 1
                time.sleep(float(response.getheader("Retry-After") or "1"))
                continue
            if response.status != 200:
                result.failures.append(f"{response.status}: {data[:200]!r}")
                return False
            result.latencies.append(time.perf_counter() - started)
            result.rejected += ExportTraceServiceResponse.FromString(data).partial_success.rejected_spans
            result.spans += spans
            return True
        result.failures.append("gave up after 1000 attempts")
        return False


def _encode(body: bytes, compress: bool) -> bytes:
    return gzip.compress(body, compresslevel=GZIP_LEVEL) if compress else body


def client_main(job: ClientJob, ready: Queue[Any], start: Event) -> None:
    """A client process: prepare (untimed), report ready, wait for the start signal, send, report."""
    result = ClientResult(job.client)
    began = time.perf_counter()
    factory = BodyFactory(job.templates)
    prepared: list[tuple[bytes, int, int]] = []
    if not job.rate:
        for index in range(job.client, job.bodies, job.clients):
            prepared.append((_encode(factory.body(index), job.gzip), factory.spans(index), factory.runs(index)))
    result.prepare_s = time.perf_counter() - began
    ready.put(("ready", job.client))
    start.wait()
    cpu_before = time.process_time()
    sender = _Sender(job.port, gzip=job.gzip, result=result)
    result.first_send = time.monotonic()
    for body, spans, runs in prepared if not job.rate else _paced(job, factory):
        if sender.post(body, spans):
            result.runs += runs
    result.last_ack = time.monotonic()
    result.cpu_s = time.process_time() - cpu_before
    ready.put(("done", result))


def _paced(job: ClientJob, factory: BodyFactory) -> Iterator[tuple[bytes, int, int]]:
    """Bodies made on the fly, released at ``job.rate`` spans/s until ``job.duration_s`` is over."""
    began = time.monotonic()
    sent = 0
    index = job.first_index + job.client
    while time.monotonic() - began < job.duration_s:
        due = began + sent / job.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        spans = factory.spans(index)
        yield _encode(factory.body(index), job.gzip), spans, factory.runs(index)
        sent += spans
        index += job.clients


@dataclass
class Clients:
    """Client processes, prepared and waiting for ``go()``."""

    jobs: list[ClientJob]
    processes: list[Any] = field(default_factory=list)
    queue: Any = None
    start_event: Any = None
    prepare_s: float = 0.0

    def prepare(self) -> Clients:
        ctx = multiprocessing.get_context("spawn")  # nothing of this process (or a chDB engine) is inherited
        self.queue = ctx.Queue()
        self.start_event = ctx.Event()
        began = time.perf_counter()
        for job in self.jobs:
            process = ctx.Process(target=client_main, args=(job, self.queue, self.start_event), daemon=True)
            process.start()
            self.processes.append(process)
        for _ in self.jobs:
            kind, _client = self.queue.get(timeout=600)
            assert kind == "ready"
        self.prepare_s = time.perf_counter() - began
        return self

    def go(self) -> float:
        started = time.monotonic()
        self.start_event.set()
        return started

    def results(self, timeout_s: float | None = None) -> list[ClientResult]:
        out: list[ClientResult] = []
        for _ in self.jobs:
            kind, result = self.queue.get(timeout=timeout_s)
            assert kind == "done"
            out.append(result)
        for process in self.processes:
            process.join(timeout=30)
        return sorted(out, key=lambda r: r.client)

    def finished(self) -> bool:
        return all(not process.is_alive() for process in self.processes) or self.queue.qsize() >= len(self.jobs)


def fixed_jobs(templates: list[bytes], plan: Plan, clients: int, port: int, *, compress: bool) -> list[ClientJob]:
    return [ClientJob(c, clients, templates, port, compress, bodies=plan.bodies) for c in range(clients)]


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarize_clients(results: list[ClientResult], started: float) -> dict[str, Any]:
    latencies = [x for r in results for x in r.latencies]
    last_ack = max(r.last_ack for r in results)
    spans = sum(r.spans for r in results)
    return {
        "spans_acknowledged": spans,
        "spans_rejected": sum(r.rejected for r in results),
        "runs_acknowledged": sum(r.runs for r in results),
        "requests": sum(r.requests for r in results),
        "retries": sum(r.retries for r in results),
        "failures": [f for r in results for f in r.failures][:10],
        "ack_seconds": last_ack - started,
        "ack_spans_per_s": spans / max(last_ack - started, 1e-9),
        "latency_p50_ms": percentile(latencies, 0.5) * 1e3,
        "latency_p99_ms": percentile(latencies, 0.99) * 1e3,
        "client_cpu_s": sum(r.cpu_s for r in results),
        "client_prepare_s": max(r.prepare_s for r in results),
    }


# --- component rates -------------------------------------------------------------------------------


def component_bodies(templates: list[bytes], plan: Plan, spans: int) -> list[tuple[bytes, int]]:
    """The first bodies of the plan (same ids as on the wire), about ``spans`` spans in all."""
    factory = BodyFactory(templates)
    bodies: list[tuple[bytes, int]] = []
    total = 0
    index = 0
    while total < min(spans, plan.spans):
        bodies.append((factory.body(index), factory.spans(index)))
        total += factory.spans(index)
        index += 1
    return bodies


def measure_decode(bodies: list[tuple[bytes, int]]) -> tuple[dict[str, Any], list[tuple[bytes, int]]]:
    """parse + convert (default Redactor) + encode as the pipeline does them, one thread.

    Returns the rate and the encoded payloads.
    """
    from agentwatch.collectors.config.settings import CollectorSettings
    from agentwatch.collectors.ingest.otlp import Limits, convert, parse_protobuf
    from agentwatch.instrumentation.redaction import Redactor

    settings = CollectorSettings()
    limits = Limits(
        max_spans_per_request=settings.max_spans_per_request, max_attribute_length=settings.max_attribute_length
    )
    redactor = Redactor()
    parse_s = convert_s = encode_s = 0.0
    payloads: list[tuple[bytes, int]] = []
    for body, _spans in bodies:
        t0 = time.perf_counter()
        request = parse_protobuf(body)
        t1 = time.perf_counter()
        converted = convert(request, tenant=None, limits=limits, redactor=redactor, wire=body)
        t2 = time.perf_counter()
        payload = converted.payload()
        t3 = time.perf_counter()
        parse_s, convert_s, encode_s = parse_s + t1 - t0, convert_s + t2 - t1, encode_s + t3 - t2
        payloads.append((payload, converted.accepted))
    spans = sum(n for _, n in payloads)
    total = parse_s + convert_s + encode_s
    report = {
        "spans": spans,
        "seconds": total,
        "spans_per_s": spans / total,
        "parse_us_per_span": parse_s / spans * 1e6,
        "convert_us_per_span": convert_s / spans * 1e6,
        "encode_us_per_span": encode_s / spans * 1e6,
        "json_bytes_per_span": sum(len(p) for p, _ in payloads) / spans,
    }
    return report, payloads


def measure_pipeline(
    bodies: list[tuple[bytes, int]], workdir: Path, *, compress: bool, dialects: bool = True
) -> dict[str, Any]:
    """``Pipeline.export`` (auth, decompress, decode, digest, fsynced spool append, metrics), one thread."""
    from agentwatch.collectors.config.auth import Authenticator
    from agentwatch.collectors.config.settings import CollectorSettings
    from agentwatch.collectors.ingest.pipeline import Pipeline
    from agentwatch.collectors.metrics import CollectorMetrics
    from agentwatch.collectors.store.spool import Spool
    from agentwatch.instrumentation.redaction import Redactor

    settings = CollectorSettings(
        spool=str(workdir / "pipeline-spool"), spool_max_bytes=1 << 40, dialects=dialects
    ).validate()
    spool = Spool(Path(settings.spool), max_bytes=settings.spool_max_bytes)
    metrics = CollectorMetrics()
    pipeline = Pipeline(
        settings=settings, spool=spool, metrics=metrics, authenticator=Authenticator(), redactor=Redactor()
    )
    wire = [(_encode(body, compress), spans) for body, spans in bodies]
    started = time.perf_counter()
    spans = 0
    try:
        for body, _ in wire:
            reply = pipeline.export(
                body=body,
                content_type=PROTOBUF,
                content_encoding="gzip" if compress else None,
                authorization=None,
                transport="http",
            )
            if reply.status != 200:
                raise RuntimeError(f"pipeline answered {reply.status}: {reply.message}")
            spans += reply.accepted
        seconds = time.perf_counter() - started
    finally:
        spool.close()
        shutil.rmtree(workdir / "pipeline-spool", ignore_errors=True)
    return {"spans": spans, "seconds": seconds, "spans_per_s": spans / seconds}


def measure_insert(payloads: list[tuple[bytes, int]], batch_spans: int, workdir: Path) -> dict[str, Any]:
    """JSONEachRow inserts of about ``batch_spans`` rows each into a fresh chDB store, in a child."""
    directory = workdir / "insert-only"
    directory.mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, Any]] = []
    batch: list[bytes] = []
    spans = 0
    for payload, count in [*payloads, (b"", 0)]:
        if batch and (spans + count > batch_spans or not count):
            path = directory / f"batch-{len(manifest)}.jsonl"
            path.write_bytes(b"\n".join(batch))
            manifest.append({"path": str(path), "spans": spans})
            batch, spans = [], 0
        if count:
            batch.append(payload)
            spans += count
    (directory / "manifest.json").write_text(json.dumps(manifest))
    try:
        result = run_json_child(_INSERT_SCRIPT, str(directory / "clickhouse"), str(directory / "manifest.json"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        **result,
        "batches": len(manifest),
        "batch_spans": result["spans"] / max(len(manifest), 1),
        "spans_per_s": result["spans"] / result["seconds"],
    }


def measure_baseline(templates: list[bytes], plan: Plan, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The same bodies, the same clients, to a bare Starlette app on uvicorn that only reads the body."""
    port = free_port()
    with (workdir / "baseline.log").open("ab") as log:
        server = subprocess.Popen([sys.executable, "-c", _BASELINE_SERVER, str(port)], stdout=log, stderr=log)
    try:
        _wait_http(port, server)
        clients = Clients(fixed_jobs(templates, plan, args.clients, port, compress=args.gzip)).prepare()
        cpu_before = cpu_seconds(server.pid)
        started = clients.go()
        summary = summarize_clients(clients.results(timeout_s=600), started)
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {**summary, "spans_per_s": summary["ack_spans_per_s"], "server_cpu_s": cpu}


def _wait_http(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if http_get(port, "/readyz")[0] == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("server did not start")


# --- end to end ------------------------------------------------------------------------------------


def wait_written(
    collector: Collector,
    clients: Clients,
    on_sample: Callable[[float, dict[str, float]], None] | None = None,
    interval_s: float = SENDING_POLL_S,
) -> tuple[list[ClientResult], float, dict[str, float]]:
    """Poll /metrics until the clients are done and every acknowledged span is written.

    Polls every ``interval_s`` while the clients send (a scrape every 50 ms would take a few
    percent of the collector's one busy core, which no real Prometheus does), then every
    ``POLL_S``, so the moment the last span is written is still seen within 50 ms.
    Returns the client results, the time the last span was seen written, and the last metrics.
    Gives up when nothing is written for ``STALL_TIMEOUT_S`` after the clients finished.
    """
    results: list[ClientResult] | None = None
    progress_at, last_written = time.monotonic(), -1.0
    polled_at = -math.inf
    while True:
        now = time.monotonic()
        if results is None and now - polled_at < interval_s and not clients.finished():
            time.sleep(POLL_S)  # the clients are checked every POLL_S, the collector every interval_s
            continue
        polled_at = now
        metrics = collector.metrics()
        written = metrics.get("agentwatch_collector_spans_written_total", 0.0)
        if on_sample is not None:
            on_sample(now, metrics)
        if results is None and clients.finished():
            results = clients.results(timeout_s=60)
        if results is not None:
            accepted = sum(r.spans - r.rejected for r in results)
            if written >= accepted:
                return results, now, metrics
            if written != last_written:
                progress_at, last_written = now, written
            elif now - progress_at > STALL_TIMEOUT_S:
                log(f"  no progress for {STALL_TIMEOUT_S:.0f}s: {written:.0f} of {accepted} spans written")
                return results, now, metrics
        time.sleep(POLL_S)


def run_end_to_end(
    templates: list[bytes], plan: Plan, args: argparse.Namespace, workdir: Path, profile: Path | None
) -> dict[str, Any]:
    collector = Collector(workdir / "e2e", profile=profile).start()
    try:
        clients = Clients(fixed_jobs(templates, plan, args.clients, collector.http_port, compress=args.gzip))
        clients.prepare()
        cpu_before, threads_before = cpu_seconds(collector.pid), thread_cpu(collector.pid)
        busy_before = machine_busy_seconds()
        started = clients.go()
        results, written_at, metrics = wait_written(collector, clients)
        cpu = cpu_seconds(collector.pid) - cpu_before
        busy = machine_busy_seconds() - busy_before
        threads = thread_breakdown(threads_before, thread_cpu(collector.pid))
        peak_rss = status_bytes(collector.pid, "VmHWM")
        rss = status_bytes(collector.pid, "VmRSS")
    finally:
        exit_code = collector.stop()
    summary = summarize_clients(results, started)
    stored = verify_store(collector.store_path)
    seconds = written_at - started
    inserts = metrics.get("agentwatch_collector_insert_duration_seconds_count", 0.0)
    written = metrics.get("agentwatch_collector_spans_written_total", 0.0)
    return {
        **summary,
        "spans_planned": plan.spans,
        "runs_planned": plan.runs,
        "seconds": seconds,
        "spans_per_s": summary["spans_acknowledged"] / seconds,
        "spans_written_metric": written,
        "inserts": inserts,
        "writer_batch_spans": written / inserts if inserts else 0.0,
        "insert_seconds": metrics.get("agentwatch_collector_insert_duration_seconds_sum", 0.0),
        "collector_cpu_s": cpu,
        "cpu_s_per_100k_spans": cpu / max(summary["spans_acknowledged"], 1) * 1e5,
        "cpu_cores_used": cpu / seconds,
        # what other processes took meanwhile (the clients' sending, and anything else on the machine)
        "other_cores_busy": max(0.0, busy - cpu) / seconds,
        "clients_cores_busy": summary["client_cpu_s"] / seconds,
        "threads": threads[:12],
        "peak_rss_bytes": peak_rss,
        "rss_at_end_bytes": rss,
        "collector_exit": exit_code,
        **_losses(stored, plan.spans, plan.runs),
    }


def _losses(stored: dict[str, Any], spans_sent: int, runs_sent: int) -> dict[str, Any]:
    """Loss against what was sent (a refused or partially rejected request is loss too)."""
    return {
        "rows_stored": stored["rows"],
        "distinct_stored": stored["distinct"],
        "runs_stored": stored["runs"],
        "lost_spans": spans_sent - stored["distinct"],
        "duplicate_spans": stored["rows"] - stored["distinct"],
        "lost_runs": runs_sent - stored["runs"],
    }


# --- soak ------------------------------------------------------------------------------------------


def run_soak(templates: list[bytes], rate: float, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """A fresh collector at ``rate`` spans/s for ``args.soak`` seconds; RSS sampled every 10 s."""
    collector = Collector(workdir / "soak").start()
    samples: list[dict[str, float]] = []
    began = 0.0
    next_sample = 0.0

    def on_sample(now: float, metrics: dict[str, float]) -> None:
        nonlocal next_sample
        if now >= next_sample:
            next_sample = now + SOAK_SAMPLE_S
            sample = {
                "t_s": round(now - began, 1),
                "rss_mib": status_bytes(collector.pid, "VmRSS") / MIB,
                "written": metrics.get("agentwatch_collector_spans_written_total", 0.0),
                "spool_spans": metrics.get("agentwatch_collector_spool_spans", 0.0),
            }
            samples.append(sample)
            log(
                f"  soak t={sample['t_s']:6.0f}s  rss {sample['rss_mib']:7.1f} MiB  "
                f"written {sample['written']:>10.0f}  spool {sample['spool_spans']:>7.0f}"
            )

    try:
        jobs = [
            ClientJob(c, args.clients, templates, collector.http_port, args.gzip, rate=rate / args.clients,
                      duration_s=args.soak, first_index=1 << 24)
            for c in range(args.clients)
        ]  # fmt: skip
        clients = Clients(jobs).prepare()
        cpu_before = cpu_seconds(collector.pid)
        began = clients.go()
        next_sample = began
        results, written_at, _ = wait_written(collector, clients, on_sample, interval_s=0.5)
        cpu = cpu_seconds(collector.pid) - cpu_before
        peak_rss = status_bytes(collector.pid, "VmHWM")
    finally:
        exit_code = collector.stop()
    summary = summarize_clients(results, began)
    stored = verify_store(collector.store_path)
    return {
        **summary,
        "target_spans_per_s": rate,
        "seconds": written_at - began,
        "spans_per_s": summary["spans_acknowledged"] / max(summary["ack_seconds"], 1e-9),
        "collector_cpu_s": cpu,
        "cpu_s_per_100k_spans": cpu / max(summary["spans_acknowledged"], 1) * 1e5,
        "peak_rss_bytes": peak_rss,
        "collector_exit": exit_code,
        "samples": samples,
        **rss_trend(samples, args.soak),
        **_losses(stored, summary["spans_acknowledged"], summary["runs_acknowledged"]),
    }


def rss_trend(samples: list[dict[str, float]], duration_s: float) -> dict[str, float]:
    """Least-squares RSS slope after the baseline mark, and growth from the mark to the end."""
    mark = min(SOAK_BASELINE_S, duration_s / 2)
    steady = [s for s in samples if mark <= s["t_s"] <= duration_s + SOAK_SAMPLE_S] or samples[-1:]
    if not steady:
        return {"rss_slope_mib_per_min": 0.0, "rss_growth": 0.0, "rss_mark_s": mark}
    times = [s["t_s"] / 60 for s in steady]
    rss = [s["rss_mib"] for s in steady]
    slope = statistics.linear_regression(times, rss).slope if len(steady) > 1 else 0.0
    return {"rss_slope_mib_per_min": slope, "rss_growth": rss[-1] / rss[0] - 1, "rss_mark_s": mark}


# --- report ----------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def render(report: dict[str, Any]) -> str:
    e2e, base = report["end_to_end"], report["baseline"]
    dec, pipe, ins = report["decode_only"], report["pipeline_only"], report["insert_only"]
    plain = report["pipeline_only_no_dialects"]
    rate = e2e["spans_per_s"]
    lines = [
        f"collector throughput ({report['spans']} spans in {report['requests_planned']} requests of "
        f"~{report['spans_per_request']:.0f} spans, {report['clients']} clients, "
        f"{'gzip' if report['gzip'] else 'identity'}, {os.cpu_count()} cores, same run)",
        f"  end to end (acked + written)   {rate:10,.0f} spans/s   {e2e['seconds']:6.2f} s"
        f"   (target >= {TARGET_SPANS_PER_S:,})",
        f"    acknowledged only            {e2e['ack_spans_per_s']:10,.0f} spans/s   "
        f"request p50 {e2e['latency_p50_ms']:.0f} ms, p99 {e2e['latency_p99_ms']:.0f} ms, "
        f"{e2e['retries']} retries",
        f"  decode only (1 thread)         {dec['spans_per_s']:10,.0f} spans/s   "
        f"e2e = {_ratio(rate, dec['spans_per_s']):.2f}x"
        f"   (parse {dec['parse_us_per_span']:.1f} + convert {dec['convert_us_per_span']:.1f}"
        f" + encode {dec['encode_us_per_span']:.1f} us/span)",
        f"  pipeline only (1 thread)       {pipe['spans_per_s']:10,.0f} spans/s   "
        f"e2e = {_ratio(rate, pipe['spans_per_s']):.2f}x   (+ digest, fsynced spool, metrics)",
        f"    without the run assembler    {plain['spans_per_s']:10,.0f} spans/s   "
        f"assembler costs {1 - _ratio(pipe['spans_per_s'], plain['spans_per_s']):+.1%} of pipeline throughput",
        f"  insert only (chDB)             {ins['spans_per_s']:10,.0f} spans/s   "
        f"e2e = {_ratio(rate, ins['spans_per_s']):.2f}x"
        f"   ({ins['batch_spans']:,.0f}-span batches, {dec['json_bytes_per_span']:.0f} B/span)",
        f"  baseline (bare uvicorn)        {base['spans_per_s']:10,.0f} spans/s   "
        f"e2e = {_ratio(rate, base['spans_per_s']):.2f}x",
        f"  collector CPU                  {e2e['collector_cpu_s']:10.1f} s         "
        f"{e2e['cpu_s_per_100k_spans']:.2f} CPU-s per 100k spans, {e2e['cpu_cores_used']:.2f} cores busy",
        f"  writer batches                 {e2e['writer_batch_spans']:10,.0f} spans     "
        f"{e2e['inserts']:.0f} inserts, {e2e['insert_seconds']:.1f} s inserting",
        f"  peak RSS                       {e2e['peak_rss_bytes'] / MIB:10.0f} MiB       (target <= 1024 MiB)",
        f"  loss / duplicates              {e2e['lost_spans']:>10} / {e2e['duplicate_spans']}"
        f"      ({e2e['rows_stored']:,} rows, {e2e['distinct_stored']:,} distinct, "
        f"{e2e['runs_stored']:,} of {e2e['runs_planned']:,} runs)",
        f"  rest of the machine            {e2e['other_cores_busy']:10.2f} cores     "
        f"(clients {e2e['clients_cores_busy']:.2f}; more than that means a noisy run)",
        "  busiest collector threads      " + ", ".join(f"{t['thread']} {t['cpu_s']}s" for t in e2e["threads"][:6]),
    ]
    soak = report.get("soak")
    if soak:
        lines += [
            f"soak: {soak['spans_acknowledged']:,} spans at {soak['spans_per_s']:,.0f} spans/s "
            f"(asked {soak['target_spans_per_s']:,.0f}) for {soak['ack_seconds']:.0f} s",
            "  RSS (MiB) every 10 s: " + " ".join(f"{s['rss_mib']:.0f}" for s in soak["samples"]),
            f"  slope after {soak['rss_mark_s']:.0f} s  {soak['rss_slope_mib_per_min']:+.2f} MiB/min, "
            f"growth {soak['rss_growth'] * 100:+.1f}% (limit +{SOAK_GROWTH_LIMIT * 100:.0f}%), "
            f"peak {soak['peak_rss_bytes'] / MIB:.0f} MiB, {soak['cpu_s_per_100k_spans']:.2f} CPU-s per 100k spans",
            f"  loss / duplicates  {soak['lost_spans']} / {soak['duplicate_spans']}",
        ]
    failed = [name for name, ok in report["targets_met"].items() if not ok]
    lines.append("targets: " + ("all met" if not failed else "MISSED " + ", ".join(failed)))
    return "\n".join(lines)


def targets(report: dict[str, Any]) -> dict[str, bool]:
    e2e = report["end_to_end"]
    met = {
        f"spans_per_s>={TARGET_SPANS_PER_S}": e2e["spans_per_s"] >= TARGET_SPANS_PER_S,
        "zero_loss": e2e["lost_spans"] == 0 and e2e["lost_runs"] == 0 and not e2e["failures"],
        "zero_duplicates": e2e["duplicate_spans"] == 0,
        "peak_rss<=1GiB": e2e["peak_rss_bytes"] <= TARGET_PEAK_RSS_BYTES,
    }
    soak = report.get("soak")
    if soak:
        met["soak_zero_loss"] = soak["lost_spans"] == 0 and soak["duplicate_spans"] == 0 and not soak["failures"]
        met[f"soak_rss_growth<={SOAK_GROWTH_LIMIT:.0%}"] = soak["rss_growth"] <= SOAK_GROWTH_LIMIT
        met["soak_peak_rss<=1GiB"] = soak["peak_rss_bytes"] <= TARGET_PEAK_RSS_BYTES
    return met


def print_profile(path: Path, top: int) -> None:
    import pstats

    log(f"\ncollector profile (cProfile in every thread; wall time, so waits show too): {path}")
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)


# --- main ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=400_000, help="spans to send (rounded up to whole requests)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes")
    parser.add_argument("--batch-spans", type=int, default=1500, help="spans per export request (about)")
    parser.add_argument("--runs", type=int, default=400, help="fleet runs recorded as templates")
    parser.add_argument("--component-spans", type=int, default=100_000, help="spans for the component rates")
    parser.add_argument("--gzip", action="store_true", help="gzip request bodies")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="then run at half rate this long")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="cProfile the e2e collector into FILE")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores, logs)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="agentwatch-bench-"))
    try:
        report = run(args, workdir)
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    if args.profile:
        print_profile(args.profile, 35)
    met = report["targets_met"]
    correctness = [name for name in met if "loss" in name or "growth" in name or "duplicates" in name]
    if any(not met[name] for name in correctness):
        return 1
    return 1 if args.strict and not all(met.values()) else 0


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    log(f"recording {args.runs} fleet runs as templates ...")
    templates = fleet_templates(args.runs, args.batch_spans)
    plan = make_plan(BodyFactory(templates), args.spans)
    log(f"  {len(templates)} templates; plan: {plan.spans} spans, {plan.runs} runs in {plan.bodies} requests")
    bodies = component_bodies(templates, plan, args.component_spans)
    log("decode only ...")
    decode, payloads = measure_decode(bodies)
    log("pipeline only ...")
    pipeline = measure_pipeline(bodies, workdir, compress=args.gzip)
    log("pipeline only, without the run assembler (--no-dialects) ...")
    pipeline_plain = measure_pipeline(bodies, workdir, compress=args.gzip, dialects=False)
    del bodies
    log("baseline (bare uvicorn) ...")
    baseline = measure_baseline(templates, plan, args, workdir)
    log(f"end to end: {args.clients} clients preparing {plan.spans} spans, then sending ...")
    e2e = run_end_to_end(templates, plan, args, workdir, args.profile)
    log("insert only (chDB, writer's batch size) ...")
    insert = measure_insert(payloads, max(int(e2e["writer_batch_spans"]), 1), workdir)
    report: dict[str, Any] = {
        "spans": plan.spans,
        "requests_planned": plan.bodies,
        "spans_per_request": plan.spans / plan.bodies,
        "clients": args.clients,
        "gzip": args.gzip,
        "end_to_end": e2e,
        "decode_only": decode,
        "pipeline_only": pipeline,
        "pipeline_only_no_dialects": pipeline_plain,
        "insert_only": insert,
        "baseline": baseline,
        "ratios": {
            "e2e_vs_decode_only": _ratio(e2e["spans_per_s"], decode["spans_per_s"]),
            "e2e_vs_pipeline_only": _ratio(e2e["spans_per_s"], pipeline["spans_per_s"]),
            "e2e_vs_insert_only": _ratio(e2e["spans_per_s"], insert["spans_per_s"]),
            "e2e_vs_baseline": _ratio(e2e["spans_per_s"], baseline["spans_per_s"]),
        },
    }
    if args.soak:
        rate = e2e["spans_per_s"] / 2
        log(f"soak: {rate:,.0f} spans/s for {args.soak:.0f} s on a fresh collector ...")
        report["soak"] = run_soak(templates, rate, args, workdir)
    report["targets_met"] = targets(report)
    return report


if __name__ == "__main__":
    sys.exit(main())
