"""The write-ahead spool's on-disk format, and the records, batches and errors it hands out.

:mod:`agentwatch.collectors.store.spool` describes how the spool works. On disk, in its ``directory``:

* ``NNNNNNNNNNNNNNNNNNNN.seg`` — segments named after the sequence number of their first record,
  holding records ``magic | payload length | seq | spans | digest length | crc32 | digest | payload``
  (little endian; the CRC covers everything but itself).
* ``checkpoint.json`` — the spool id, the last committed seq and the batch in flight, replaced
  atomically (write, fsync, rename, fsync the directory).
* ``digests.log`` — request digests of records whose segments were deleted, so a client retry of a
  request acknowledged before a restart is still recognised after the rows went to ClickHouse.
* ``LOCK`` — an ``flock`` so two processes never share one spool.

:mod:`agentwatch.collectors.store.spool_recovery` reads them back when the spool opens.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("agentwatch.collectors.store.spool")

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


def _read_entry(f: BinaryIO, path: Path, offset: int, limit: int) -> _Entry:
    """The record at ``offset`` of the open segment ``f``, which recovery verified already."""
    head = f.read(_HEADER.size)
    if len(head) == _HEADER.size:
        _, length, _, _, dlen, _ = _HEADER.unpack(head)
        if offset + _HEADER.size + dlen + length <= limit:
            entry = _parse(head + f.read(dlen + length), 0)
            if entry is not None:
                return entry
    # recovery verified this record; it changed on disk since
    raise SpoolCorrupt(f"{path}: damaged record at offset {offset}; restart the collector to quarantine it")


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
    """fsync policy in one place: real syncs, or none at all for tests and benchmarks; and the writes they sync."""

    def __init__(self, directory: Path, *, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync

    def write(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (not synced yet)."""
        _write_all(fd, data, offset)

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
