"""Drains the spool into ClickHouse: batches by size and time, retries outages, never loses a batch.

One writer thread per collector. A batch leaves the spool only after ClickHouse accepted it; each
insert carries the batch's deterministic dedup token, so a batch re-sent after a crash or a timeout
that actually succeeded is stored once. A batch ClickHouse refuses as bad data (which validation
should make impossible) is moved to a dead-letter file and counted as dropped rather than
blocking the pipeline forever.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from agentwatch.collectors.metrics import CollectorMetrics
from agentwatch.collectors.store.clickhouse import ClickHouseStore, StoreError, StoreRejected, StoreUnavailable
from agentwatch.collectors.store.schema import SchemaOptions
from agentwatch.collectors.store.schema_check import warn_at_start
from agentwatch.collectors.store.spool import Batch, Spool

log = logging.getLogger("agentwatch.collector")

TRACES_TABLE = "otel_traces"
_MAX_BACKOFF_S = 5.0
# An idle writer pings the store this often, so /readyz notices an outage before the next insert.
_IDLE_PING_S = 5.0


class SpoolWriter:
    """Background thread: apply the schema, then move spool batches into ClickHouse."""

    def __init__(
        self,
        *,
        spool: Spool,
        store: ClickHouseStore,
        metrics: CollectorMetrics,
        schema: SchemaOptions,
        dead_letter_dir: Path,
        batch_max_spans: int,
        batch_max_bytes: int,
        batch_timeout_s: float,
    ) -> None:
        self._spool = spool
        self._store = store
        self._metrics = metrics
        self._schema = schema
        self._dead_letters = dead_letter_dir
        self._max_spans = batch_max_spans
        self._max_bytes = batch_max_bytes
        self._timeout = batch_timeout_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentwatch-writer", daemon=True)
        self.last_error = ""
        self._last_contact = time.monotonic()
        self._schema_checked = False

    @property
    def ready(self) -> bool:
        """The store answered and the schema is applied (what /readyz reports)."""
        return self._ready.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, drain_timeout_s: float = 10.0) -> None:
        """Try to empty the spool within the deadline, then stop; what is left is replayed at next start."""
        deadline = time.monotonic() + drain_timeout_s
        while self._spool.pending_spans and self._ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(timeout=max(1.0, deadline - time.monotonic() + 5.0))

    def wait_until_drained(self, timeout_s: float) -> bool:
        """Block until nothing is pending in the spool (tests, the demo and graceful shutdown use it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._spool.pending_spans:
                return True
            time.sleep(0.01)
        return not self._spool.pending_spans

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if not self._ready.is_set():
                    self._connect()
                    backoff = 0.1
                if self._drain_once():
                    backoff = 0.1
                    self._last_contact = time.monotonic()
                elif time.monotonic() - self._last_contact > _IDLE_PING_S:
                    if not self._store.ping():
                        raise StoreUnavailable("the store does not answer ping")
                    self._last_contact = time.monotonic()
            except StoreUnavailable as exc:
                self._mark_down(str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception as exc:  # keep draining whatever happens; the spool still holds the data
                message = f"{type(exc).__name__}: {exc}"
                if self._ready.is_set() or message != self.last_error:
                    log.exception("writer error")  # the traceback once per distinct error, not per retry
                self._mark_down(message)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    def _connect(self) -> None:
        applied = self._store.ensure_schema(self._schema)
        if applied:
            log.info("applied schema migrations %s", applied)
        if not self._schema_checked:
            # once per process: an otel_traces another writer created keeps its sort key and TTL; say so
            self._schema_checked = True
            warn_at_start(self._store, self._schema, log)
        self._ready.set()
        self._metrics.set_store_up(True)
        if self.last_error:
            log.info("ClickHouse reachable again at %s: writing the spool", self._store.url)
        else:
            log.info("ClickHouse reachable at %s, schema applied", self._store.url)
        self.last_error = ""

    def _mark_down(self, message: str) -> None:
        """Not ready, because of ``message``: logged when it first happens, changes, or follows an up period.

        Retries with the same reason stay silent (the reason is on /readyz meanwhile), so a wrong
        ``--clickhouse`` URL is one clear line in the log rather than one per backoff step.
        """
        if self._ready.is_set() or message != self.last_error:
            log.warning("ClickHouse unavailable, spooling until it answers: %s", message)
        self._ready.clear()
        self._metrics.set_store_up(False)
        self.last_error = message

    def _drain_once(self) -> bool:
        """Insert one batch when enough data or enough time has gathered; True if one was written."""
        self._publish_spool()
        pending = self._spool.pending_spans
        if not pending:
            self._spool.wait_for_data(self._timeout)
            return False
        if pending < self._max_spans and self._spool.pending_bytes < self._max_bytes:
            # batching by time: give small trickles a moment to gather into one larger insert
            self._stop.wait(min(self._timeout, 0.05))
        batch = self._spool.next_batch(max_bytes=self._max_bytes, max_spans=self._max_spans)
        if batch is None:
            return False
        self._write(batch)
        return True

    def _write(self, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            self._store.insert_json_rows(TRACES_TABLE, batch.payload, dedup_token=batch.token)
        except StoreRejected as exc:
            self._dead_letter(batch, str(exc))
        except StoreUnavailable:
            self._metrics.record_insert_failure()
            raise
        except StoreError as exc:
            self._metrics.record_insert_failure()
            raise StoreUnavailable(str(exc)) from exc
        else:
            self._metrics.record_written(batch.spans, time.perf_counter() - started)
        self._spool.commit(batch)
        self._publish_spool()

    def _dead_letter(self, batch: Batch, reason: str) -> None:
        self._dead_letters.mkdir(parents=True, exist_ok=True)
        path = self._dead_letters / f"{batch.token}.jsonl"
        path.write_bytes(batch.payload)
        log.error(
            "ClickHouse refused batch %s (%d spans) as bad data; kept in %s: %s", batch.token, batch.spans, path, reason
        )
        self._metrics.record_dropped("store_rejected", batch.spans)

    def _publish_spool(self) -> None:
        spool = self._spool
        self._metrics.set_spool(
            spool.pending_bytes,
            spool.pending_spans,
            spool.capacity_bytes,
            reclaimed_bytes=spool.reclaimed_bytes,
            disk_full_errors=spool.disk_full_errors,
        )
