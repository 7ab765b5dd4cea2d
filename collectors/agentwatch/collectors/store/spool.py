"""The collector's write-ahead spool: an OTLP request is acknowledged only once its rows are fsynced here.

Appenders (HTTP/gRPC handlers) hand encoded rows to :meth:`Spool.append`, which returns once the
record is on disk; one background *committer* thread gathers concurrent appends into a single
write + fsync (group commit), so many handlers share one fsync instead of queueing for one each.
One drainer (the ClickHouse writer) takes batches with :meth:`Spool.next_batch`, inserts them with
the batch's :attr:`Batch.token` as ``insert_deduplication_token`` and then calls :meth:`Spool.commit`.
Records appended since open stay in memory (up to ``memory_bytes`` of payload) until committed, so
batches are built from the bytes that were acknowledged rather than read back from disk; after a
restart, or past that bound, they are read from disk.

On disk, in ``directory``, are segments of records, ``checkpoint.json`` (the last committed seq and
the batch in flight), ``digests.log`` (digests of records already deleted) and a ``LOCK``:
:mod:`~agentwatch.collectors.store.spool_format` specifies them, and
:mod:`~agentwatch.collectors.store.spool_recovery` repairs what a crash left when the spool opens.
:class:`Spool` keeps the drainer's side; it owns the appends and the committer thread
(:mod:`~agentwatch.collectors.store.spool_commit`) and the segment files and remembered digests
(:mod:`~agentwatch.collectors.store.spool_files`).

Exactly-once into ClickHouse rests on two rules: a batch is persisted as "in flight" before it is
handed out, so after a crash the same records come back as the same batch with the same token; and
tokens carry the spool id, so two collectors (or a recreated spool that restarts at seq 1) never
collide inside ClickHouse's deduplication window.

Committed space is reclaimed even though segments only rotate at ``segment_bytes``: once every
record of the active segment is committed, the committer deletes it before the next write (journaling
its digests first) when it has grown past ``reclaim_bytes``, or when a write failed with ENOSPC or
EDQUOT; a write that fails that way is retried once in a fresh segment when the active one could be
reclaimed. Recovery deletes a fully committed last segment too, so a restart starts from an empty
one. Otherwise a disk that filled up once would stay full of delivered records and refuse every
request of the size that filled it, while ``pending_bytes`` reports nothing to deliver.
"""

from __future__ import annotations

import bisect
import collections
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from agentwatch.collectors.store.spool_commit import _Committer, _Pending
from agentwatch.collectors.store.spool_files import _Digests, _Segments
from agentwatch.collectors.store.spool_format import (
    _CHECKPOINT,
    _HEADER,
    Batch,
    Record,
    SpoolCorrupt,
    SpoolError,
    SpoolFull,
    _Checkpoint,
    _checkpoint_bytes,
    _Disk,
    _Entry,
    _Pos,
    _read_entry,
    _Segment,
)
from agentwatch.collectors.store.spool_recovery import _acquire_lock, _recover

__all__ = ["Batch", "Record", "Spool", "SpoolCorrupt", "SpoolError", "SpoolFull"]

_READ_BUFFER = 1 << 20

# decides whether a batch takes one more record: (record, records so far, payload bytes, spans) -> bool
_Accept = Callable[[_Entry, int, int, int], bool]


@dataclass(frozen=True, slots=True)
class _Inflight:
    batch: Batch
    disk_bytes: int
    end: _Pos


def _batch_key(batch: Batch) -> tuple[str, int, int]:
    return batch.spool_id, batch.first_seq, batch.last_seq


def _check_options(max_bytes: int, segment_bytes: int, *non_negative: float) -> None:
    """Refuse settings the spool cannot work with before it touches the directory."""
    if max_bytes <= _HEADER.size or segment_bytes <= _HEADER.size:
        raise ValueError("max_bytes and segment_bytes must be larger than one record header")
    if min(non_negative) < 0:
        raise ValueError("commit_window_s, digest_memory, memory_bytes and reclaim_bytes must not be negative")


class Spool:
    """Durable local queue of encoded span rows between the receivers and ClickHouse.

    Many threads may call :meth:`append` and :meth:`seen`; one drainer calls :meth:`next_batch`
    and :meth:`commit` (they are serialised anyway). A fully committed active segment is deleted
    once it holds ``reclaim_bytes`` (at most ``segment_bytes``; 0: as soon as it is committed),
    bounding the disk that delivered records occupy, and whenever the disk was found full.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        fsync: bool = True,
        commit_window_s: float = 0.002,
        digest_memory: int = 100_000,
        memory_bytes: int = 64 << 20,
        reclaim_bytes: int = 4 << 20,
    ) -> None:
        _check_options(max_bytes, segment_bytes, commit_window_s, digest_memory, memory_bytes, reclaim_bytes)
        self._dir = Path(directory).absolute()
        self._max_bytes = max_bytes
        self._disk = _Disk(self._dir, fsync=fsync)

        self._lock = threading.Lock()
        self._data = threading.Condition(self._lock)  # drainer: records became durable
        self._drain_lock = threading.Lock()
        self._digests = _Digests(self._disk, self._lock, digest_memory)  # and the journal of deleted ones
        self._segments = _Segments(
            self._disk,
            self._lock,
            self._drain_lock,
            self._digests,
            lambda: self._committed,
            segment_bytes=segment_bytes,
            reclaim_bytes=max(1, min(reclaim_bytes, segment_bytes)),
        )
        self._closed = False
        self._groups = 0
        self._appended = 0
        self._inflight: _Inflight | None = None
        # state recovered from disk by _recover()
        self._spool_id = ""
        self._committed = 0  # last seq ClickHouse has
        self._recovered_inflight: tuple[int, int] | None = None  # batch in flight when the last run ended
        self._cursor = _Pos(1, 0)  # just after the last committed record
        self._durable_seq = 0
        self._pending_bytes = 0
        self._pending_spans = 0
        # Records appended since open stay in memory, up to ``memory_bytes`` of payload, until they
        # are committed: the drainer takes them from here instead of reading them back from disk
        # (a read, a CRC check and two copies per record, each giving up the GIL to the busy
        # request threads). Keyed by where each record sits in its segment; what did not fit is
        # read from disk as before.
        self._memory_limit = memory_bytes
        self._memory: collections.OrderedDict[tuple[int, int], _Entry] = collections.OrderedDict()
        self._memory_bytes = 0

        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self._dir)
        try:
            next_seq = self._recover()
        except BaseException:
            self._close_fds()
            raise
        self._committer = _Committer(
            self._disk,
            self._lock,
            self._segments,
            self._digests,
            next_seq=next_seq,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            window=commit_window_s,
            uncommitted=lambda: self._pending_bytes,
            acknowledge=self._acknowledge,
        )

    # --- public API ---------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def spool_id(self) -> str:
        """Random id chosen when the spool was created; part of every batch token."""
        return self._spool_id

    @property
    def pending_bytes(self) -> int:
        """Bytes of durable records not yet committed (what counts against ``max_bytes``)."""
        with self._lock:
            return self._pending_bytes

    @property
    def pending_spans(self) -> int:
        with self._lock:
            return self._pending_spans

    @property
    def capacity_bytes(self) -> int:
        return self._max_bytes

    @property
    def appended_records(self) -> int:
        """Records written since open (with :attr:`write_groups`: the average group-commit size)."""
        with self._lock:
            return self._appended

    @property
    def write_groups(self) -> int:
        """Write + fsync rounds since open."""
        with self._lock:
            return self._groups

    @property
    def reclaimed_bytes(self) -> int:
        """Bytes of committed records freed since open by deleting the active segment early.

        Commits delete only the segments before the active one; this counts the active segment (and
        at open the last one) deleted once fully committed: every ``reclaim_bytes`` on a busy spool,
        and right after :attr:`disk_full_errors` grew when the spool made room on a full disk.
        """
        with self._lock:
            return self._segments.reclaimed_bytes

    @property
    def disk_full_errors(self) -> int:
        """Segment writes since open that failed with ENOSPC or EDQUOT, retries included.

        Each is retried once in a fresh segment when the committed records could be reclaimed; the
        appends fail (HTTP 503) only when the retry fails too or nothing was reclaimable.
        """
        with self._lock:
            return self._committer.disk_full_errors

    def append(self, payload: bytes, *, spans: int, digest: bytes | None = None) -> int:
        """Spool one request's rows and return its seq once they are fsynced.

        With a ``digest`` already spooled (or being spooled by a concurrent retry) nothing is
        written and the original's seq is returned once that record is durable. Raises
        :class:`SpoolFull` without writing when the record would not fit, :class:`SpoolError`
        when the write fails (nothing of the record is then acknowledged or replayed), and
        ``ValueError`` for a record that could never fit.
        """
        return self._committer.append(payload, spans, digest)

    def seen(self, digest: bytes) -> bool:
        """True if a request with this digest was durably spooled (remembered across restarts)."""
        with self._lock:
            return digest in self._digests

    def next_batch(self, *, max_bytes: int, max_spans: int) -> Batch | None:
        """The records after the checkpoint, oldest first, up to the limits (at least one record).

        Until it is committed, the same batch comes back on every call, even after a crash and a
        reopen, whatever the limits: its token then matches the one of an insert that may have
        reached ClickHouse. None when nothing is pending.
        """
        with self._drain_lock:
            self._check_not_closed()
            if self._inflight is not None:
                return self._inflight.batch
            if self._recovered_inflight is not None:
                self._inflight = self._rebuild_inflight(*self._recovered_inflight)
                self._recovered_inflight = None
                if self._inflight is not None:
                    return self._inflight.batch
            with self._lock:
                if self._durable_seq <= self._committed:
                    return None
            inflight = self._read_batch(
                lambda entry, n, size, spans: n == 0 or (size <= max_bytes and spans <= max_spans), None
            )
            if inflight is None:
                return None
            self._save_checkpoint(inflight=(inflight.batch.first_seq, inflight.batch.last_seq))
            self._inflight = inflight
            return inflight.batch

    def commit(self, batch: Batch) -> None:
        """The batch is in ClickHouse: advance the checkpoint and delete fully committed segments."""
        with self._drain_lock:
            recovered = self._recovered_inflight
            if self._inflight is None and recovered is not None and recovered == (batch.first_seq, batch.last_seq):
                # the batch was handed out before a restart and the drainer still holds it
                self._recovered_inflight = None
                self._inflight = self._rebuild_inflight(*recovered)
            inflight = self._inflight
            if inflight is None or _batch_key(inflight.batch) != _batch_key(batch):
                raise ValueError(f"batch {batch.token} is not the batch in flight")
            self._advance(batch.last_seq, inflight)

    def pending_records(self) -> Iterator[Record]:
        """The uncommitted records, oldest first (inspection and tests; call it from the drainer's thread)."""
        with self._drain_lock:
            cursor = self._cursor
        for entry, _ in self._iter_entries(cursor):
            yield Record(entry.seq, entry.spans, entry.payload)

    def wait_for_data(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until :meth:`next_batch` has something; True if it has."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._has_data() and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._data.wait(remaining)
            return self._has_data()

    def close(self) -> None:
        """Finish queued appends, stop the committer, release the directory. Idempotent."""
        if not self._committer.stop():
            return
        with self._drain_lock, self._lock:
            self._closed = True
            self._data.notify_all()
            self._close_fds()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- opening and recovery -----------------------------------------------------------------

    def _recover(self) -> int:
        """Take over what the spool's files hold; returns the seq of the next record."""
        checkpoint, scan = _recover(self._disk)
        self._spool_id = checkpoint.spool_id
        self._committed = checkpoint.committed
        self._recovered_inflight = checkpoint.inflight
        self._pending_bytes = scan.pending_bytes
        self._pending_spans = scan.pending_spans
        self._durable_seq = scan.last_seq
        inflight_last = checkpoint.inflight[1] if checkpoint.inflight else 0
        next_seq = max(scan.last_seq, checkpoint.committed, inflight_last) + 1
        self._digests.restore(scan.digests)
        self._segments.open(scan.segments)
        self._cursor = scan.cursor or self._segments.end(next_seq)  # _Pos(next_seq, 0) when everything was committed
        return next_seq

    # --- the committer's side -----------------------------------------------------------------

    def _acknowledge(self, segment: _Segment, chunk: list[_Pending], first: int, written: int) -> None:
        """The committer wrote and fsynced ``chunk`` at the end of ``segment``: records for the drainer."""
        offset = segment.size
        segment.size += written
        segment.last_seq = first + len(chunk) - 1
        for i, pending in enumerate(chunk):
            pending.seq = first + i
            if self._memory_bytes + len(pending.payload) <= self._memory_limit:
                entry = _Entry(pending.seq, pending.spans, pending.digest, pending.payload, pending.size)
                self._memory[(segment.first_seq, offset)] = entry
                self._memory_bytes += len(pending.payload)
            offset += pending.size
            self._pending_bytes += pending.size
            self._pending_spans += pending.spans
            if pending.digest:
                self._digests.remember(pending.digest, pending.seq)
        self._digests.trim()
        self._durable_seq = segment.last_seq
        self._appended += len(chunk)
        self._groups += 1
        self._data.notify_all()

    # --- draining -----------------------------------------------------------------------------

    def _check_not_closed(self) -> None:
        if self._closed:
            raise SpoolError(f"{self._dir}: spool is closed")

    def _has_data(self) -> bool:
        return self._inflight is not None or self._recovered_inflight is not None or self._durable_seq > self._committed

    def _iter_entries(self, pos: _Pos) -> Generator[tuple[_Entry, _Pos], None, None]:
        """Durable records from ``pos`` on, each with the position after it; from memory when there."""
        with self._lock:
            segments = self._segments.snapshot()
            durable_seq = self._durable_seq
        start = bisect.bisect_left([first for first, _, _ in segments], pos.segment)
        for first, path, size in segments[start:]:
            offset = pos.offset if first == pos.segment else 0
            f: BinaryIO | None = None
            try:
                while offset < size:
                    with self._lock:
                        entry = self._memory.get((first, offset))
                    if entry is None:
                        if f is None:
                            f = path.open("rb", buffering=_READ_BUFFER)
                        if f.tell() != offset:
                            f.seek(offset)
                        entry = _read_entry(f, path, offset, size)
                    if entry.seq > durable_seq:
                        return
                    offset += entry.disk_size
                    yield entry, _Pos(first, offset)
            finally:
                if f is not None:
                    f.close()

    def _read_batch(self, accept: _Accept, fixed: tuple[int, int] | None) -> _Inflight | None:
        """Read records from the cursor while ``accept(entry, count, bytes, spans)`` says so."""
        payloads: list[bytes] = []
        first = last = spans = disk = size = 0
        end = self._cursor
        entries = self._iter_entries(self._cursor)
        try:
            for entry, after in entries:
                grown = size + len(entry.payload) + (1 if payloads else 0)
                if not accept(entry, len(payloads), grown, spans + entry.spans):
                    break
                first = first or entry.seq
                last, size, spans, disk, end = entry.seq, grown, spans + entry.spans, disk + entry.disk_size, after
                payloads.append(entry.payload)
        finally:
            entries.close()  # closes the open segment file when the batch stopped early
        if not payloads:
            return None
        if fixed is not None:
            first, last = fixed  # the recovered batch keeps its range (and token) even with records lost
        batch = Batch(first, last, spans, b"\n".join(payloads), self._spool_id)
        return _Inflight(batch, disk, end)

    def _rebuild_inflight(self, first: int, last: int) -> _Inflight | None:
        """The batch handed out before the last shutdown or crash, read back from the same records."""
        inflight = self._read_batch(lambda entry, n, size, spans: entry.seq <= last, (first, last))
        if inflight is None:
            # every record of that batch was quarantined as corrupt: nothing is left to insert again
            self._advance(last, None)
        return inflight

    def _advance(self, committed: int, inflight: _Inflight | None) -> None:
        self._save_checkpoint(committed=committed, inflight=None)
        with self._lock:
            self._committed = committed
            self._inflight = None
            if inflight is not None:
                self._cursor = inflight.end
                self._pending_bytes -= inflight.disk_bytes
                self._pending_spans -= inflight.batch.spans
            memory = self._memory
            while memory:
                key, entry = next(iter(memory.items()))  # oldest first: records are acknowledged in order
                if entry.seq > committed:
                    break
                del memory[key]
                self._memory_bytes -= len(entry.payload)
        self._segments.delete_committed()

    def _save_checkpoint(self, *, committed: int | None = None, inflight: tuple[int, int] | None) -> None:
        checkpoint = _Checkpoint(self._spool_id, self._committed if committed is None else committed, inflight)
        self._disk.replace(self._dir / _CHECKPOINT, _checkpoint_bytes(checkpoint))

    def _close_fds(self) -> None:
        self._segments.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1
