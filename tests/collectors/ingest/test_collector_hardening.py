"""Findings of the collector's security review, each replayed against a running collector.

- two concatenated gzip members that each inflate past one decompression chunk (4,134 bytes on
  the wire) used to spin forever and starve every request behind them;
- time filters at the edges of the datetime range answered 500 (or silently inverted the filter
  after 2262, past what the store's DateTime64(9) columns hold);
- attribute keys had no length cap;
- nothing bounded how many requests decode at once, nor told /readyz when the collector is full.

Plus a property-based fuzz of the decompression path through ``/v1/traces``: every body gets a
2xx or 4xx within a time bound, and the next good request is stored.
"""

from __future__ import annotations

import gzip
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from _chrows import engine_url
from _otlp_clients import (
    JSON,
    PROTOBUF,
    Collector,
    http_request,
    json_request,
    json_span,
    random_span_id,
    random_trace_id,
    running_collector,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import TRACES_TABLE

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

MiB = 1 << 20


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    with running_collector(clickhouse_url, tmp_path) as running:
        yield running


def one_span(**attributes: object) -> bytes:
    start = time.time_ns() - 1_000_000_000
    span = json_span(
        trace_id=random_trace_id(),
        span_id=random_span_id(),
        start_ns=start,
        end_ns=start + 1000,
        name="hardening",
        attributes=attributes,
    )
    return json_request([span])


def test_the_4_kb_two_member_gzip_body_is_answered_and_the_collector_stays_up(collector: Collector) -> None:
    body = gzip.compress(bytes(2 * MiB)) * 2
    assert len(body) == 4134
    started = time.monotonic()
    reply = http_request(
        collector.traces_url, body, {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}, timeout_s=10
    )
    assert time.monotonic() - started < 5
    assert reply.status == 400, reply.body[:200]  # 4 MiB of zeros inflate fine and are no protobuf
    assert collector.get("/readyz").status == 200
    assert collector.post(one_span(), {"Content-Type": JSON}).status == 200
    collector.drain()
    assert collector.count(TRACES_TABLE) == 1


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2300-01-01",
        "1899-12-31T23:59:59Z",
        "99999w",
    ],
)
@pytest.mark.parametrize("route", ["runs", "stats", "recordings", "drift"])
@pytest.mark.parametrize("name", ["since", "until"])
def test_time_filters_beyond_the_store_range_are_400(collector: Collector, route: str, name: str, value: str) -> None:
    extra = "&agent=support" if route == "drift" else ""  # drift judges one agent
    reply = collector.get(f"/api/v1/{route}?{name}={urllib.parse.quote(value)}{extra}")
    assert reply.status == 400, (reply.status, reply.body[:300])
    assert "outside the times the store can hold" in reply.json()["error"]


def test_time_filters_at_the_store_range_edges_still_work(collector: Collector) -> None:
    reply = collector.get("/api/v1/runs?since=1900-01-01T00:00:00Z&until=2262-04-11T23:47:16Z")
    assert reply.status == 200, reply.body[:300]


def test_long_attribute_keys_are_cut_to_the_key_cap(clickhouse_url: str, tmp_path: Path) -> None:
    with running_collector(clickhouse_url, tmp_path, max_attribute_key_length=64) as collector:
        long_key = "k" * (5 * MiB)
        reply = collector.post(one_span(**{long_key: "v", "short": "ok"}), {"Content-Type": JSON})
        assert reply.status == 200
        collector.drain()
        rows = collector.query(f"SELECT mapKeys(SpanAttributes) AS keys FROM {TRACES_TABLE}")
    keys = rows[0]["keys"]
    assert isinstance(keys, list)
    assert sorted(keys) == ["k" * 64, "short"]


def test_busy_decode_slots_refuse_with_retry_after_and_fail_readiness_but_reads_go_on(
    clickhouse_url: str, tmp_path: Path
) -> None:
    with running_collector(clickhouse_url, tmp_path, max_concurrent_decodes=2, decode_timeout_seconds=0.5) as collector:
        pipeline = collector.service.pipeline
        # hold both slots as two requests stuck in decoding would
        assert pipeline._take_slot()
        assert pipeline._take_slot()
        try:
            time.sleep(1.2)
            ready = collector.get("/readyz")
            assert ready.status == 503
            assert "decode slots busy" in ready.json()["reason"]
            started = time.monotonic()
            refused = collector.post(one_span(), {"Content-Type": JSON})
            assert refused.status == 503
            assert refused.headers["retry-after"]
            assert time.monotonic() - started < 3
            read_started = time.monotonic()
            assert collector.get("/api/v1/runs").status == 200
            assert time.monotonic() - read_started < 2
        finally:
            pipeline._give_slot()
            pipeline._give_slot()
        assert collector.get("/readyz").status == 200
        assert collector.post(one_span(), {"Content-Type": JSON}).status == 200


# --- fuzz: the decompression path end to end ------------------------------------------------------


def _member(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "zlib":
        return zlib.compress(data)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


_FUZZ_SPAN = one_span()  # one body for every example: hypothesis needs draws that do not depend on the clock


@st.composite
def compressed_requests(draw: st.DrawFn) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["gzip", "zlib", "raw"]))
    extra = draw(st.lists(st.sampled_from([b"", b" ", bytes(MiB), b"\n" * (MiB + 1)]), min_size=0, max_size=3))
    payloads = [_FUZZ_SPAN, *extra]
    body = b"".join(_member(kind, payload) for payload in payloads)
    damage = draw(st.sampled_from(["none", "truncate", "garbage", "layered"]))
    header = "gzip" if kind == "gzip" else "deflate"
    if damage == "truncate":
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    elif damage == "garbage":
        body += draw(st.binary(min_size=1, max_size=32))
    elif damage == "layered":
        body, header = gzip.compress(body), f"{header}, gzip"
    return body, header


@pytest.fixture(scope="module")
def fuzz_collector(clickhouse_engine: ClickHouseStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """One collector for every fuzz example, on a database of its own in the session engine."""
    database = f"fuzz_{uuid.uuid4().hex[:12]}"
    clickhouse_engine.command(f"CREATE DATABASE {database}")
    try:
        url = engine_url(clickhouse_engine, database)
        workdir = tmp_path_factory.mktemp("fuzz")
        with running_collector(url, workdir, max_body_bytes=4 * MiB, decode_timeout_seconds=5) as running:
            yield running
    finally:
        clickhouse_engine.command(f"DROP DATABASE IF EXISTS {database} SYNC")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=compressed_requests())
def test_fuzzed_compressed_bodies_get_an_answer_and_the_next_request_works(
    fuzz_collector: Collector, case: tuple[bytes, str]
) -> None:
    body, header = case
    started = time.monotonic()
    reply = http_request(
        fuzz_collector.traces_url, body, {"Content-Type": JSON, "Content-Encoding": header}, timeout_s=15
    )
    assert time.monotonic() - started < 10
    assert 200 <= reply.status < 500, (reply.status, reply.body[:200])
    assert fuzz_collector.post(one_span(), {"Content-Type": JSON}).status == 200


def test_spool_reclaims_and_full_disks_are_counted_once_each() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from agentwatch.collectors.metrics import CollectorMetrics

    metrics = CollectorMetrics()
    metrics.set_spool(0, 0, 100, reclaimed_bytes=4096, disk_full_errors=1)
    metrics.set_spool(0, 0, 100, reclaimed_bytes=4096, disk_full_errors=1)  # the same totals again: no change
    metrics.set_spool(0, 0, 100, reclaimed_bytes=6144, disk_full_errors=3)
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }
    assert values["agentwatch_collector_spool_reclaimed_bytes_total"] == 6144
    assert values["agentwatch_collector_spool_disk_full_total"] == 3
