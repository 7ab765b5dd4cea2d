"""The write-ahead spool's appends: a queue, and the committer thread that writes it in groups.

:meth:`_Committer.append` returns once the record is on disk; one background *committer* thread
gathers concurrent appends into a single write + fsync (group commit), so many handlers share one
fsync instead of queueing for one each, and a write that finds the disk full is retried once in a
fresh segment when committed records could be reclaimed. :mod:`agentwatch.collectors.store.spool`
describes the whole spool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agentwatch.collectors.store.spool_files import _Digests, _Segments
from agentwatch.collectors.store.spool_format import (
    _DISK_FULL,
    _HEADER,
    _MAX_DIGEST,
    _MAX_U32,
    SpoolError,
    SpoolFull,
    _Disk,
    _encode,
    _Segment,
)

log = logging.getLogger("agentwatch.collectors.store.spool")


@dataclass(slots=True)
class _Pending:
    """One append waiting for the committer."""

    payload: bytes
    spans: int
    digest: bytes
    size: int
    seq: int = 0
    done: bool = False
    error: BaseException | None = None


# records a chunk written and fsynced in the spool's state: (segment, chunk, its first seq, bytes written)
_Acknowledge = Callable[[_Segment, list[_Pending], int, int], None]


class _Committer:
    """The appends of a :class:`~agentwatch.collectors.store.spool.Spool`, and its committer thread.

    Shares the spool's state lock and calls these holding it: ``uncommitted`` for the bytes of the
    durable records not committed yet (they count against ``max_bytes`` with the queued ones), and
    ``acknowledge`` for every chunk written and fsynced, before its appenders return. Only the
    committer thread writes to ``segments``.
    """

    def __init__(
        self,
        disk: _Disk,
        lock: threading.Lock,
        segments: _Segments,
        digests: _Digests,
        *,
        next_seq: int,
        max_bytes: int,
        segment_bytes: int,
        window: float,
        uncommitted: Callable[[], int],
        acknowledge: _Acknowledge,
    ) -> None:
        self._dir = disk.directory
        self._lock = lock
        self._segments = segments
        self._digests = digests
        self._next_seq = next_seq
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._window = window
        self._uncommitted = uncommitted
        self._acknowledge = acknowledge
        self._work = threading.Condition(lock)  # committer: appends queued, or closing
        self._durable = threading.Condition(lock)  # appenders: their group was written
        self._queue: list[_Pending] = []
        self._queued_digests: dict[bytes, _Pending] = {}
        self._reserved = 0
        self._closing = False
        self._failed: BaseException | None = None
        self._last_group = 1
        self.disk_full_errors = 0  # guarded by the lock
        self._thread = threading.Thread(target=self._run, name="agentwatch-spool-commit", daemon=True)
        self._thread.start()

    def append(self, payload: bytes, spans: int, digest: bytes | None) -> int:
        """:meth:`Spool.append <agentwatch.collectors.store.spool.Spool.append>`."""
        digest = digest or b""
        size = self._check_record(payload, spans, digest)
        with self._lock:
            self._check_open()
            pending = self._queued_digests.get(digest) if digest else None
            if digest and pending is None and digest in self._digests:
                return self._digests[digest]
            if pending is None:
                pending = self._enqueue(payload, spans, digest, size)
            while not pending.done:
                self._durable.wait()
        if pending.error is not None:
            raise SpoolError(f"spool write failed: {pending.error}") from pending.error
        return pending.seq

    def stop(self) -> bool:
        """Finish the queued appends and end the thread; False if it was stopped already."""
        with self._lock:
            if self._closing:
                return False
            self._closing = True
            self._work.notify_all()
        self._thread.join()
        return True

    def _check_record(self, payload: bytes, spans: int, digest: bytes) -> int:
        if not 0 <= spans <= _MAX_U32:
            raise ValueError(f"spans must be between 0 and {_MAX_U32}")
        if len(digest) > _MAX_DIGEST:
            raise ValueError(f"digest longer than {_MAX_DIGEST} bytes")
        size = _HEADER.size + len(digest) + len(payload)
        if size > self._max_bytes or len(payload) > _MAX_U32:
            raise ValueError(f"record of {size} bytes can never fit a spool of {self._max_bytes} bytes")
        return size

    def _check_open(self) -> None:
        if self._closing:
            raise SpoolError(f"{self._dir}: spool is closed")
        if self._failed is not None:
            raise SpoolError(f"{self._dir}: spool stopped after an I/O error ({self._failed}); restart to recover")

    def _enqueue(self, payload: bytes, spans: int, digest: bytes, size: int) -> _Pending:
        held = self._uncommitted() + self._reserved
        if held + size > self._max_bytes:
            raise SpoolFull(f"spool holds {held} of {self._max_bytes} bytes; a record of {size} bytes does not fit")
        pending = _Pending(payload, spans, digest, size)
        self._queue.append(pending)
        self._reserved += size
        if digest:
            self._queued_digests[digest] = pending
        self._work.notify()
        return pending

    # --- the committer thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (group := self._take_group()) is not None:
                self._write_group(group)
        except BaseException as exc:  # never leave appenders waiting forever
            log.exception("spool committer failed")
            with self._lock:
                self._failed = exc
                self._finish(self._queue, exc)
                self._queue = []

    def _take_group(self) -> list[_Pending] | None:
        """The next group: everything queued, after waiting briefly for peers when appends are concurrent."""
        with self._lock:
            while not self._queue and not self._closing:
                self._work.wait()
            if not self._queue:
                return None
            if self._window and self._last_group > 1:
                # the previous group had company: give its members the window to queue again, so
                # they share this fsync instead of each paying for the next one
                deadline = time.monotonic() + self._window
                while len(self._queue) < self._last_group and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._work.wait(remaining)
            group, self._queue = self._queue, []
            self._last_group = len(group)
            return group

    def _write_group(self, group: list[_Pending]) -> None:
        """Write and fsync the group, one chunk per segment it touches; acknowledge chunk by chunk."""
        start = 0
        while start < len(group):
            if self._failed is not None:
                with self._lock:
                    self._finish(group[start:], self._failed)
                return
            try:
                segment = self._segments.segment_for(group[start].size, self._next_seq)
            except OSError as exc:
                log.error("%s: cannot create a spool segment: %s", self._dir, exc)
                with self._lock:
                    self._finish(group[start:], exc)
                return
            end = self._chunk_end(group, start, segment)
            error = self._write_chunk(segment, group[start:end])
            if error is not None:
                with self._lock:
                    self._finish(group[end:], error)
                return
            start = end

    def _chunk_end(self, group: list[_Pending], start: int, segment: _Segment) -> int:
        size, end = segment.size + group[start].size, start + 1
        while end < len(group) and size + group[end].size <= self._segment_bytes:
            size += group[end].size
            end += 1
        return end

    def _write_chunk(self, segment: _Segment, chunk: list[_Pending], *, retry: bool = True) -> OSError | None:
        first = self._next_seq
        data = b"".join(_encode(first + i, p.spans, p.digest, p.payload) for i, p in enumerate(chunk))
        try:
            self._segments.write(segment, data)
        except OSError as exc:
            self._undo_write(segment, exc)
            fresh = self._on_disk_full(exc, len(data), retry=retry) if exc.errno in _DISK_FULL else None
            if fresh is not None:
                return self._write_chunk(fresh, chunk, retry=False)
            with self._lock:
                self._finish(chunk, exc)
            return exc
        try:
            self._segments.sync()
        except OSError as exc:
            # after a failed fsync the page cache can no longer be trusted to match the disk
            log.error("%s: fsync failed, spool stops accepting: %s", segment.path, exc)
            with self._lock:
                self._failed = exc
                self._finish(chunk, exc)
            return exc
        self._next_seq = first + len(chunk)
        with self._lock:
            self._acknowledge(segment, chunk, first, len(data))
            self._finish(chunk, None)
        return None

    def _undo_write(self, segment: _Segment, exc: OSError) -> None:
        """Cut a failed write back off, so no half record is ever followed by the next good one."""
        if exc.errno not in _DISK_FULL:  # _on_disk_full explains those
            log.error("%s: spool write failed: %s", segment.path, exc)
        try:
            self._segments.cut_back(segment)
        except OSError as undo_exc:
            log.error("%s: cannot undo the failed write, spool stops accepting: %s", segment.path, undo_exc)
            self._failed = undo_exc

    def _on_disk_full(self, exc: OSError, size: int, *, retry: bool) -> _Segment | None:
        """A write found no space: reclaim the active segment if it is all committed, and say what happened.

        Returns a fresh segment to retry the write in once, or None when the appends fail. Without
        this a disk filled once stays full of delivered records: nothing else frees the active segment.
        """
        with self._lock:
            self.disk_full_errors += 1
            pending = self._uncommitted()
        self._segments.disk_full = True  # also reclaim at the next write once the pending records are committed
        if self._failed is not None:
            return None  # the failed write could not be cut off; _undo_write said so
        if not retry:
            log.warning("%s: disk full (%s) even after reclaiming; %d bytes of appends fail", self._dir, exc, size)
            return None
        try:
            reclaimed = self._segments.reclaim_active()
            fresh = self._segments.segment_for(size, self._next_seq) if reclaimed else None
        except OSError as new_exc:
            log.error("%s: disk full (%s) and reclaiming space failed: %s", self._dir, exc, new_exc)
            return None
        if fresh is None:
            log.warning(
                "%s: disk full (%s): cannot write %d bytes and nothing could be reclaimed: %d bytes of records "
                "are not committed to ClickHouse yet; appends fail until they are or space is freed",
                self._dir,
                exc,
                size,
                pending,
            )
        else:
            log.warning(
                "%s: disk full (%s): reclaimed %d bytes of committed records from the active segment; "
                "retrying the write of %d bytes in a new segment",
                self._dir,
                exc,
                reclaimed,
                size,
            )
        return fresh

    def _finish(self, pendings: Iterable[_Pending], error: BaseException | None) -> None:
        for pending in pendings:
            pending.error = error
            pending.done = True
            self._reserved -= pending.size
            if pending.digest and self._queued_digests.get(pending.digest) is pending:
                del self._queued_digests[pending.digest]
        self._durable.notify_all()
