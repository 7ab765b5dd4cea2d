"""The collector's write-ahead spool: an OTLP request is acknowledged only once its rows are fsynced here.

Appenders (HTTP/gRPC handlers) hand encoded rows to :meth:`Spool.append`, which returns once the
record is on disk; one background *committer* thread gathers concurrent appends into a single
write + fsync (group commit), so many handlers share one fsync instead of queueing for one each.
One drainer (the ClickHouse writer) takes batches with :meth:`Spool.next_batch`, inserts them with
the batch's :attr:`Batch.token` as ``insert_deduplication_token`` and then calls :meth:`Spool.commit`.
Records appended since open stay in memory (up to ``memory_bytes`` of payload) until committed, so
batches are built from the bytes that were acknowledged rather than read back from disk; after a
restart, or past that bound, they are read from disk.

On disk, in ``directory``:

* ``NNNNNNNNNNNNNNNNNNNN.seg`` — segments named after the sequence number of their first record,
  holding records ``magic | payload length | seq | spans | digest length | crc32 | digest | payload``
  (little endian; the CRC covers everything but itself).
* ``checkpoint.json`` — the spool id, the last committed seq and the batch in flight, replaced
  atomically (write, fsync, rename, fsync the directory).
* ``digests.log`` — request digests of records whose segments were deleted, so a client retry of a
  request acknowledged before a restart is still recognised after the rows went to ClickHouse.
* ``LOCK`` — an ``flock`` so two processes never share one spool.

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

Recovery on open scans every segment. Only the newest segment can end in a torn write (a segment is
fsynced before the next one is created), so unparseable bytes at its end are a crash mid-write that
was never acknowledged and are truncated away. Damage anywhere else is corruption: the damaged bytes
are moved to ``<segment>.<offset>.corrupt``, logged as an error, and every intact record before and
after them is kept. Refusing to start instead would stop all ingestion and lose more than the few
unreadable records, which cannot be recovered either way.
"""

from __future__ import annotations

import bisect
import collections
import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

log = logging.getLogger(__name__)

_MAGIC = b"AWS1"
# magic, payload length, seq, spans, digest length, 3 pad bytes, crc32
_HEADER = struct.Struct("<4sIQIB3xI")
_CRC_AT = _HEADER.size - 4
_CRC = struct.Struct("<I")
_MAX_DIGEST = 255
_MAX_U32 = (1 << 32) - 1
_SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME_DIGITS = 20
_CHECKPOINT = "checkpoint.json"
_CHECKPOINT_FORMAT = 1
_JOURNAL = "digests.log"
_JOURNAL_ENTRY = struct.Struct("<BQ")  # digest length, seq; then the digest and a crc32 of both
_LOCK = "LOCK"
_READ_BUFFER = 1 << 20
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class SpoolError(Exception):
    """The spool cannot take or give data (I/O error, closed, locked by another process)."""


class SpoolFull(SpoolError):
    """Accepting the record would exceed the spool's capacity; the caller answers 503 + Retry-After."""


class SpoolCorrupt(SpoolError):
    """The spool's state cannot be trusted (missing or unreadable checkpoint, a record damaged after recovery)."""


@dataclass(frozen=True)
class Record:
    """One spooled request: its sequence number, span count and encoded rows."""

    seq: int
    spans: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class Batch:
    """Consecutive records handed to the drainer; payloads joined with ``b"\\n"``."""

    first_seq: int
    last_seq: int
    spans: int
    payload: bytes = field(repr=False)
    spool_id: str = ""

    @property
    def token(self) -> str:
        """Deterministic ClickHouse ``insert_deduplication_token``: the same batch always gets the same one."""
        if self.spool_id:
            return f"spool-{self.spool_id}-{self.first_seq}-{self.last_seq}"
        return f"spool-{self.first_seq}-{self.last_seq}"


# --- on-disk helpers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    """A record as read from disk, with the bytes it occupies there."""

    seq: int
    spans: int
    digest: bytes
    payload: bytes
    disk_size: int


@dataclass(frozen=True, slots=True)
class _Pos:
    """A place in the spool: a segment (by its first seq) and a byte offset in it."""

    segment: int
    offset: int


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int  # durable bytes: everything before this offset is fsynced and acknowledged
    last_seq: int  # seq of the last durable record (first_seq - 1 while empty)


# decides whether a batch takes one more record: (record, records so far, payload bytes, spans) -> bool
_Accept = Callable[[_Entry, int, int, int], bool]


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    spool_id: str
    committed: int
    inflight: tuple[int, int] | None


def _encode(seq: int, spans: int, digest: bytes, payload: bytes) -> bytes:
    head = _HEADER.pack(_MAGIC, len(payload), seq, spans, len(digest), 0)[:_CRC_AT]
    crc = zlib.crc32(payload, zlib.crc32(digest, zlib.crc32(head)))
    return b"".join((head, _CRC.pack(crc), digest, payload))


def _parse(buf: bytes, pos: int) -> _Entry | None:
    """The record at ``pos`` if it is complete and its CRC matches, else None."""
    if len(buf) - pos < _HEADER.size:
        return None
    magic, length, seq, spans, dlen, crc = _HEADER.unpack_from(buf, pos)
    start = pos + _HEADER.size
    end = start + dlen + length
    if magic != _MAGIC or end > len(buf):
        return None
    view = memoryview(buf)
    if zlib.crc32(view[start:end], zlib.crc32(view[pos : pos + _CRC_AT])) != crc:
        return None
    return _Entry(seq, spans, bytes(view[start : start + dlen]), bytes(view[start + dlen : end]), end - pos)


def _batch_key(batch: Batch) -> tuple[str, int, int]:
    return batch.spool_id, batch.first_seq, batch.last_seq


def _segment_path(directory: Path, first_seq: int) -> Path:
    return directory / f"{first_seq:0{_SEGMENT_NAME_DIGITS}d}{_SEGMENT_SUFFIX}"


def _segment_seq(path: Path) -> int | None:
    stem = path.name[: -len(_SEGMENT_SUFFIX)]
    if path.name.endswith(_SEGMENT_SUFFIX) and len(stem) == _SEGMENT_NAME_DIGITS and stem.isdigit():
        return int(stem)
    return None


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:  # pragma: no cover - pwrite raises rather than returning 0 on regular files
            raise OSError(errno.EIO, "short write")
        view = view[written:]
        offset += written


class _Disk:
    """fsync policy in one place: real syncs, or none at all for tests and benchmarks."""

    def __init__(self, directory: Path, *, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync

    def sync_fd(self, fd: int) -> None:
        if self.fsync:
            # fdatasync flushes the data and the file size (what a reader needs) but not the mtime
            os.fdatasync(fd)

    def sync_dir(self) -> None:
        if not self.fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, path: Path, data: bytes) -> None:
        """Atomically replace ``path`` with ``data``: a crash leaves the old or the new file, never a mix."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data, 0)
            self.sync_fd(fd)
        except OSError:
            tmp.unlink(missing_ok=True)  # a partial copy would only hold space on a disk that is full
            raise
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self.sync_dir()


# --- the checkpoint and the digest journal -------------------------------------------------------


def _read_checkpoint(path: Path) -> _Checkpoint:
    try:
        doc = json.loads(path.read_bytes())
        inflight = doc["inflight"]
        checkpoint = _Checkpoint(
            spool_id=str(doc["spool_id"]),
            committed=int(doc["committed_seq"]),
            inflight=None if inflight is None else (int(inflight[0]), int(inflight[1])),
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SpoolCorrupt(f"{path}: unreadable spool checkpoint ({exc}); restore it or remove the spool") from exc
    if doc.get("format") != _CHECKPOINT_FORMAT:
        raise SpoolCorrupt(f"{path}: unknown checkpoint format {doc.get('format')!r}")
    return checkpoint


def _checkpoint_bytes(checkpoint: _Checkpoint) -> bytes:
    doc = {
        "format": _CHECKPOINT_FORMAT,
        "spool_id": checkpoint.spool_id,
        "committed_seq": checkpoint.committed,
        "inflight": None if checkpoint.inflight is None else list(checkpoint.inflight),
    }
    return json.dumps(doc, sort_keys=True).encode() + b"\n"


def _journal_entry(digest: bytes, seq: int) -> bytes:
    body = _JOURNAL_ENTRY.pack(len(digest), seq) + digest
    return body + _CRC.pack(zlib.crc32(body))


def _read_journal(path: Path) -> tuple[list[tuple[int, bytes]], bool]:
    """(seq, digest) pairs in the journal, and whether it ended cleanly (False: rewrite it)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], True
    entries: list[tuple[int, bytes]] = []
    pos = 0
    while pos + _JOURNAL_ENTRY.size <= len(data):
        dlen, seq = _JOURNAL_ENTRY.unpack_from(data, pos)
        end = pos + _JOURNAL_ENTRY.size + dlen
        if end + _CRC.size > len(data) or _CRC.unpack_from(data, end)[0] != zlib.crc32(data[pos:end]):
            break
        entries.append((seq, data[pos + _JOURNAL_ENTRY.size : end]))
        pos = end + _CRC.size
    if pos != len(data):
        # a torn append (crash) or damage: the digests are a retry-dedup aid, so keep what is intact
        log.warning("%s: ignoring %d damaged bytes at offset %d", path, len(data) - pos, pos)
    return entries, pos == len(data)


# --- recovery -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Scan:
    """What recovery learned from the segments."""

    segments: list[_Segment] = field(default_factory=list)
    digests: list[tuple[int, bytes]] = field(default_factory=list)
    last_seq: int = 0
    pending_bytes: int = 0
    pending_spans: int = 0
    cursor: _Pos | None = None  # first record after the checkpoint


def _scan_records(data: bytes, after_seq: int) -> tuple[list[tuple[int, _Entry]], list[tuple[int, int]]]:
    """Intact records (offset, entry) in seq order, and the damaged byte ranges between/after them."""
    records: list[tuple[int, _Entry]] = []
    bad: list[tuple[int, int]] = []
    pos, last = 0, after_seq
    while pos < len(data):
        entry = _parse(data, pos)
        if entry is not None and entry.seq > last:
            records.append((pos, entry))
            last = entry.seq
            pos += entry.disk_size
            continue
        resume = _resync(data, pos + 1, last)
        bad.append((pos, resume))
        pos = resume
    return records, bad


def _resync(data: bytes, start: int, last_seq: int) -> int:
    """Offset of the next intact record with a seq after ``last_seq``, or the end of ``data``."""
    pos = data.find(_MAGIC, start)
    while pos >= 0:
        entry = _parse(data, pos)
        if entry is not None and entry.seq > last_seq:
            return pos
        pos = data.find(_MAGIC, pos + 1)
    return len(data)


class _Recovery:
    """Scans segments at open: truncates a torn tail, quarantines damage, collects state."""

    def __init__(self, disk: _Disk, committed: int) -> None:
        self.disk = disk
        self.committed = committed
        self.scan = _Scan()

    def run(self, paths: list[tuple[int, Path]]) -> _Scan:
        for index, (first_seq, path) in enumerate(paths):
            self._segment(first_seq, path, last=index == len(paths) - 1)
        return self.scan

    def _segment(self, first_seq: int, path: Path, *, last: bool) -> None:
        data = path.read_bytes()
        records, bad = _scan_records(data, self.scan.last_seq)
        if bad and last and bad[-1][1] == len(data):
            # unparseable bytes at the very end of the newest segment: a write the crash cut short,
            # never acknowledged (appends return only after the fsync that follows a complete write)
            start = bad.pop()[0]
            log.warning("%s: truncating %d bytes of a torn write at offset %d", path, len(data) - start, start)
            data = data[:start]
            self._truncate(path, start)
        if bad:
            data = self._quarantine(path, data, bad)
            records, _ = _scan_records(data, self.scan.last_seq)
        if not records:
            self._remove_empty(path)
            return
        self._collect(first_seq, path, data, records)

    def _truncate(self, path: Path, size: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            self.disk.sync_fd(fd)
        finally:
            os.close(fd)

    def _quarantine(self, path: Path, data: bytes, bad: list[tuple[int, int]]) -> bytes:
        """Move damaged ranges to ``*.corrupt`` files and rewrite the segment without them."""
        for start, end in bad:
            corrupt = path.with_name(f"{path.name}.{start:012d}.corrupt")
            self.disk.replace(corrupt, data[start:end])
            log.error(
                "%s: %d damaged bytes at offset %d (bad CRC or framing); moved to %s, keeping the intact records",
                path,
                end - start,
                start,
                corrupt.name,
            )
        kept, pos = [], 0
        for start, end in bad:
            kept.append(data[pos:start])
            pos = end
        kept.append(data[pos:])
        clean = b"".join(kept)
        self.disk.replace(path, clean)
        return clean

    def _remove_empty(self, path: Path) -> None:
        path.unlink()
        self.disk.sync_dir()

    def _collect(self, first_seq: int, path: Path, data: bytes, records: list[tuple[int, _Entry]]) -> None:
        scan = self.scan
        for offset, entry in records:
            if entry.digest:
                scan.digests.append((entry.seq, entry.digest))
            if entry.seq > self.committed:
                scan.pending_bytes += entry.disk_size
                scan.pending_spans += entry.spans
                if scan.cursor is None:
                    scan.cursor = _Pos(first_seq, offset)
        scan.last_seq = records[-1][1].seq
        scan.segments.append(_Segment(first_seq, path, len(data), scan.last_seq))


# --- the spool ------------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class _Inflight:
    batch: Batch
    disk_bytes: int
    end: _Pos


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
        self._segment_bytes = segment_bytes
        self._reclaim_bytes = max(1, min(reclaim_bytes, segment_bytes))
        self._window = commit_window_s
        self._digest_memory = digest_memory
        self._disk = _Disk(self._dir, fsync=fsync)

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # committer: appends queued, or closing
        self._durable = threading.Condition(self._lock)  # appenders: their group was written
        self._data = threading.Condition(self._lock)  # drainer: records became durable
        self._drain_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._queued_digests: dict[bytes, _Pending] = {}
        self._digests: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._reserved = 0
        self._closing = False
        self._closed = False
        self._failed: BaseException | None = None
        self._last_group = 1
        self._groups = 0
        self._appended = 0
        self._inflight: _Inflight | None = None
        self._active_fd: int | None = None
        # _disk_full: a segment write hit ENOSPC/EDQUOT since the active segment was last reclaimed
        self._disk_full, self._disk_full_errors, self._reclaimed_bytes = False, 0, 0
        # state recovered from disk by _recover()
        self._spool_id = ""
        self._segments: list[_Segment] = []
        self._committed = 0  # last seq ClickHouse has
        self._recovered_inflight: tuple[int, int] | None = None  # batch in flight when the last run ended
        self._cursor = _Pos(1, 0)  # just after the last committed record
        self._durable_seq = 0
        self._next_seq = 1
        self._pending_bytes = 0
        self._pending_spans = 0
        self._journaled_upto = 0  # every remembered digest up to this seq is in the journal
        self._journal_entries = 0
        # Records appended since open stay in memory, up to ``memory_bytes`` of payload, until they
        # are committed: the drainer takes them from here instead of reading them back from disk
        # (a read, a CRC check and two copies per record, each giving up the GIL to the busy
        # request threads). Keyed by where each record sits in its segment; what did not fit is
        # read from disk as before.
        self._memory_limit = memory_bytes
        self._memory: collections.OrderedDict[tuple[int, int], _Entry] = collections.OrderedDict()
        self._memory_bytes = 0

        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._acquire_lock()
        try:
            self._recover()
        except BaseException:
            self._close_fds()
            raise
        self._committer = threading.Thread(target=self._run_committer, name="agentwatch-spool-commit", daemon=True)
        self._committer.start()

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
            return self._reclaimed_bytes

    @property
    def disk_full_errors(self) -> int:
        """Segment writes since open that failed with ENOSPC or EDQUOT, retries included.

        Each is retried once in a fresh segment when the committed records could be reclaimed; the
        appends fail (HTTP 503) only when the retry fails too or nothing was reclaimable.
        """
        with self._lock:
            return self._disk_full_errors

    def append(self, payload: bytes, *, spans: int, digest: bytes | None = None) -> int:
        """Spool one request's rows and return its seq once they are fsynced.

        With a ``digest`` already spooled (or being spooled by a concurrent retry) nothing is
        written and the original's seq is returned once that record is durable. Raises
        :class:`SpoolFull` without writing when the record would not fit, :class:`SpoolError`
        when the write fails (nothing of the record is then acknowledged or replayed), and
        ``ValueError`` for a record that could never fit.
        """
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
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._work.notify_all()
        self._committer.join()
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

    def _acquire_lock(self) -> int:
        fd = os.open(self._dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"{self._dir}: spool is in use by another process") from None
        return fd

    def _recover(self) -> None:
        for tmp in self._dir.glob("*.tmp"):
            tmp.unlink()  # a replace() the crash interrupted; the original is intact
        paths = self._segment_paths()
        checkpoint = self._load_checkpoint(paths)
        self._spool_id = checkpoint.spool_id
        self._committed = checkpoint.committed
        self._recovered_inflight = checkpoint.inflight
        scan = _Recovery(self._disk, checkpoint.committed).run(paths)
        self._segments = scan.segments
        self._pending_bytes = scan.pending_bytes
        self._pending_spans = scan.pending_spans
        self._durable_seq = scan.last_seq
        inflight_last = checkpoint.inflight[1] if checkpoint.inflight else 0
        self._next_seq = max(scan.last_seq, checkpoint.committed, inflight_last) + 1
        self._restore_digests(scan.digests)
        # the last segment too: its committed records would otherwise hold their space until it
        # filled up, which on a full disk it never does; new records then start a new segment
        last = self._segments[-1] if self._segments else None
        self._delete_committed_segments(active=True)
        if last is not None and not self._segments:
            self._reclaimed_bytes = last.size
        self._cursor = scan.cursor or self._end_pos()  # _Pos(_next_seq, 0) when everything was committed
        self._open_active()

    def _segment_paths(self) -> list[tuple[int, Path]]:
        found = [(seq, path) for path in self._dir.iterdir() if (seq := _segment_seq(path)) is not None]
        return sorted(found)

    def _load_checkpoint(self, segments: list[tuple[int, Path]]) -> _Checkpoint:
        path = self._dir / _CHECKPOINT
        if path.exists():
            return _read_checkpoint(path)
        if segments:
            raise SpoolCorrupt(
                f"{self._dir}: segments without {_CHECKPOINT}; cannot tell what was already written to ClickHouse"
            )
        checkpoint = _Checkpoint(spool_id=uuid.uuid4().hex, committed=0, inflight=None)
        self._disk.replace(path, _checkpoint_bytes(checkpoint))
        return checkpoint

    def _end_pos(self) -> _Pos:
        if self._segments:
            last = self._segments[-1]
            return _Pos(last.first_seq, last.size)
        return _Pos(self._next_seq, 0)

    def _restore_digests(self, from_segments: list[tuple[int, bytes]]) -> None:
        journal, clean = _read_journal(self._dir / _JOURNAL)
        self._journaled_upto = max((seq for seq, _ in journal), default=0)
        self._journal_entries = len(journal)
        # oldest first, so the newest record of a digest wins and eviction drops the oldest
        for seq, digest in sorted(journal + from_segments):
            self._digests[digest] = seq
            self._digests.move_to_end(digest)
        self._trim_digests()
        if not clean:
            self._compact_journal()

    def _open_active(self) -> None:
        if self._segments:
            self._active_fd = os.open(self._segments[-1].path, os.O_WRONLY)

    # --- appending ----------------------------------------------------------------------------

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

    def _check_not_closed(self) -> None:
        if self._closed:
            raise SpoolError(f"{self._dir}: spool is closed")

    def _enqueue(self, payload: bytes, spans: int, digest: bytes, size: int) -> _Pending:
        if self._pending_bytes + self._reserved + size > self._max_bytes:
            raise SpoolFull(
                f"spool holds {self._pending_bytes + self._reserved} of {self._max_bytes} bytes; "
                f"a record of {size} bytes does not fit"
            )
        pending = _Pending(payload, spans, digest, size)
        self._queue.append(pending)
        self._reserved += size
        if digest:
            self._queued_digests[digest] = pending
        self._work.notify()
        return pending

    # --- the committer thread -----------------------------------------------------------------

    def _run_committer(self) -> None:
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
                segment = self._segment_for(group[start].size)
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

    def _segment_for(self, size: int) -> _Segment:
        """The segment the next record goes to: a new one after a reclaim or when the current one would overflow."""
        current = self._segments[-1] if self._segments else None
        if current is not None and (self._disk_full or current.size >= self._reclaim_bytes):
            self._reclaim_active()  # deletes (and closes) it when all its records are committed
        if current is not None and self._active_fd is not None:
            if current.size == 0 or current.size + size <= self._segment_bytes:
                return current
            # the current segment's last write is already fsynced, so only the newest segment
            # can ever hold a torn write; recovery relies on that
            os.close(self._active_fd)
            self._active_fd = None
        path = _segment_path(self._dir, self._next_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            self._disk.sync_dir()  # the new name must survive a crash before any record in it is acknowledged
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._active_fd = fd
        segment = _Segment(self._next_seq, path, 0, self._next_seq - 1)
        with self._lock:
            self._segments.append(segment)
        return segment

    def _chunk_end(self, group: list[_Pending], start: int, segment: _Segment) -> int:
        size, end = segment.size + group[start].size, start + 1
        while end < len(group) and size + group[end].size <= self._segment_bytes:
            size += group[end].size
            end += 1
        return end

    def _write_chunk(self, segment: _Segment, chunk: list[_Pending], *, retry: bool = True) -> OSError | None:
        assert self._active_fd is not None
        first = self._next_seq
        data = b"".join(_encode(first + i, p.spans, p.digest, p.payload) for i, p in enumerate(chunk))
        try:
            _write_all(self._active_fd, data, segment.size)
        except OSError as exc:
            self._undo_write(segment, exc)
            fresh = self._on_disk_full(exc, len(data), retry=retry) if exc.errno in _DISK_FULL else None
            if fresh is not None:
                return self._write_chunk(fresh, chunk, retry=False)
            with self._lock:
                self._finish(chunk, exc)
            return exc
        try:
            self._disk.sync_fd(self._active_fd)
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
        return None

    def _undo_write(self, segment: _Segment, exc: OSError) -> None:
        """Cut a failed write back off, so no half record is ever followed by the next good one."""
        if exc.errno not in _DISK_FULL:  # _on_disk_full explains those
            log.error("%s: spool write failed: %s", segment.path, exc)
        assert self._active_fd is not None
        try:
            os.ftruncate(self._active_fd, segment.size)
            self._disk.sync_fd(self._active_fd)
        except OSError as undo_exc:
            log.error("%s: cannot undo the failed write, spool stops accepting: %s", segment.path, undo_exc)
            self._failed = undo_exc

    def _on_disk_full(self, exc: OSError, size: int, *, retry: bool) -> _Segment | None:
        """A write found no space: reclaim the active segment if it is all committed, and say what happened.

        Returns a fresh segment to retry the write in once, or None when the appends fail. Without
        this a disk filled once stays full of delivered records: nothing else frees the active segment.
        """
        with self._lock:
            self._disk_full_errors += 1
            pending = self._pending_bytes
        self._disk_full = True  # also reclaim at the next write once the pending records are committed
        if self._failed is not None:
            return None  # the failed write could not be cut off; _undo_write said so
        if not retry:
            log.warning("%s: disk full (%s) even after reclaiming; %d bytes of appends fail", self._dir, exc, size)
            return None
        try:
            reclaimed = self._reclaim_active()
            fresh = self._segment_for(size) if reclaimed else None
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

    def _reclaim_active(self) -> int:
        """Delete every non-empty segment whose records are all committed, the active one included.

        Returns the bytes freed (0: nothing was committed). Commits never delete the active segment,
        nor one that was active until a rotation left it behind with nothing pending. The drainer's
        lock (then the state lock: close()'s order; the drainer never waits for the committer) keeps
        the digest journal to one writer and batches unread meanwhile. The cursor then names a deleted
        segment; _iter_entries bisects past it to the start of the next one.
        """
        with self._lock:
            if not any(s.size and s.last_seq <= self._committed for s in self._segments):
                return 0  # the usual case while records are pending: no need to wait for the drainer
        with self._drain_lock:
            with self._lock:
                victims = [s for s in self._segments if s.size and s.last_seq <= self._committed]
                active = bool(victims) and victims[-1] is self._segments[-1]
            if active and self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
            self._delete_segments(victims)
        freed = sum(s.size for s in victims)
        with self._lock:
            self._reclaimed_bytes += freed
        self._disk_full = self._disk_full and not freed
        return freed

    def _acknowledge(self, segment: _Segment, chunk: list[_Pending], first: int, written: int) -> None:
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
                self._digests[pending.digest] = pending.seq
                self._digests.move_to_end(pending.digest)
        self._trim_digests()
        self._durable_seq = segment.last_seq
        self._appended += len(chunk)
        self._groups += 1
        self._finish(chunk, None)
        self._data.notify_all()

    def _finish(self, pendings: Iterable[_Pending], error: BaseException | None) -> None:
        for pending in pendings:
            pending.error = error
            pending.done = True
            self._reserved -= pending.size
            if pending.digest and self._queued_digests.get(pending.digest) is pending:
                del self._queued_digests[pending.digest]
        self._durable.notify_all()

    def _trim_digests(self) -> None:
        while len(self._digests) > self._digest_memory:
            self._digests.popitem(last=False)

    # --- draining -----------------------------------------------------------------------------

    def _has_data(self) -> bool:
        return self._inflight is not None or self._recovered_inflight is not None or self._durable_seq > self._committed

    def _iter_entries(self, pos: _Pos) -> Generator[tuple[_Entry, _Pos], None, None]:
        """Durable records from ``pos`` on, each with the position after it; from memory when there."""
        with self._lock:
            segments = [(s.first_seq, s.path, s.size) for s in self._segments]
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
                        entry = self._read_entry(f, path, offset, size)
                    if entry.seq > durable_seq:
                        return
                    offset += entry.disk_size
                    yield entry, _Pos(first, offset)
            finally:
                if f is not None:
                    f.close()

    @staticmethod
    def _read_entry(f: BinaryIO, path: Path, offset: int, limit: int) -> _Entry:
        head = f.read(_HEADER.size)
        if len(head) == _HEADER.size:
            _, length, _, _, dlen, _ = _HEADER.unpack(head)
            if offset + _HEADER.size + dlen + length <= limit:
                entry = _parse(head + f.read(dlen + length), 0)
                if entry is not None:
                    return entry
        # recovery verified this record; it changed on disk since
        raise SpoolCorrupt(f"{path}: damaged record at offset {offset}; restart the collector to quarantine it")

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
        self._delete_committed_segments()

    def _save_checkpoint(self, *, committed: int | None = None, inflight: tuple[int, int] | None) -> None:
        checkpoint = _Checkpoint(self._spool_id, self._committed if committed is None else committed, inflight)
        self._disk.replace(self._dir / _CHECKPOINT, _checkpoint_bytes(checkpoint))

    def _delete_committed_segments(self, *, active: bool = False) -> None:
        """Delete the segments whose records are all committed, the active one only if ``active``."""
        with self._lock:
            victims = [s for s in self._segments[: None if active else -1] if s.last_seq <= self._committed]
        self._delete_segments(victims)

    def _delete_segments(self, victims: list[_Segment]) -> None:
        """Delete committed segments, journaling their digests first (holding the drain lock, or opening)."""
        if not victims:
            return
        upto = max(s.last_seq for s in victims)
        try:
            self._journal_digests(upto)
            journaled = True
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            # no room even for the digests: free the segments, then journal into their space (a crash
            # in between forgets these digests, which beats a spool that stays full forever)
            log.warning(
                "%s: disk full (%s); deleting committed segments before journaling their digests", self._dir, exc
            )
            journaled = False
        for segment in victims:
            segment.path.unlink()
        self._disk.sync_dir()
        gone = {id(s) for s in victims}
        with self._lock:
            self._segments = [s for s in self._segments if id(s) not in gone]
        if not journaled:
            try:
                self._journal_digests(upto)
            except OSError as exc:  # _journaled_upto did not move: the next journal write retries them
                log.error("%s: cannot journal the digests of records up to seq %d: %s", self._dir, upto, exc)

    def _journal_digests(self, upto: int) -> None:
        """Append the remembered digests with seqs up to ``upto`` before their records are deleted."""
        with self._lock:
            entries = []
            for digest, seq in reversed(self._digests.items()):  # newest first; stop at the journaled ones
                if seq <= self._journaled_upto:
                    break
                if seq <= upto:
                    entries.append(_journal_entry(digest, seq))
        if entries:
            path = self._dir / _JOURNAL
            created = not path.exists()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if created:
                    self._disk.sync_dir()  # now, as a failed write below leaves the file for the next try
                end = os.fstat(fd).st_size
                try:
                    _write_all(fd, b"".join(reversed(entries)), end)
                    self._disk.sync_fd(fd)
                except OSError:
                    os.ftruncate(fd, end)  # a torn entry (disk full) would hide every later one when read
                    raise
            finally:
                os.close(fd)
            self._journal_entries += len(entries)
        self._journaled_upto = max(self._journaled_upto, upto)
        if self._journal_entries > 2 * max(self._digest_memory, 1):
            self._compact_journal()

    def _compact_journal(self) -> None:
        """Rewrite the journal with only the digests still remembered (it is bounded like the memory)."""
        with self._lock:
            kept = [(digest, seq) for digest, seq in self._digests.items() if seq <= self._journaled_upto]
        self._disk.replace(self._dir / _JOURNAL, b"".join(_journal_entry(d, s) for d, s in kept))
        self._journal_entries = len(kept)

    def _close_fds(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1
