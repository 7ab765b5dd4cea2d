"""Opening the write-ahead spool: the checkpoint, and a scan of every segment that repairs what a crash left.

Recovery on open scans every segment. Only the newest segment can end in a torn write (a segment is
fsynced before the next one is created), so unparseable bytes at its end are a crash mid-write that
was never acknowledged and are truncated away. Damage anywhere else is corruption: the damaged bytes
are moved to ``<segment>.<offset>.corrupt``, logged as an error, and every intact record before and
after them is kept. Refusing to start instead would stop all ingestion and lose more than the few
unreadable records, which cannot be recovered either way.

The files are described in :mod:`agentwatch.collectors.store.spool_format`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from agentwatch.collectors.store.spool_format import (
    _CHECKPOINT,
    _LOCK,
    _MAGIC,
    SpoolCorrupt,
    SpoolError,
    _Checkpoint,
    _checkpoint_bytes,
    _Disk,
    _Entry,
    _parse,
    _Pos,
    _read_checkpoint,
    _Segment,
    _segment_seq,
)

log = logging.getLogger("agentwatch.collectors.store.spool")


def _acquire_lock(directory: Path) -> int:
    """The ``flock`` on the spool's ``LOCK`` file, as a descriptor whose closing releases it."""
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(f"{directory}: spool is in use by another process") from None
    return fd


def _recover(disk: _Disk) -> tuple[_Checkpoint, _Scan]:
    """The checkpoint (a new one for a new spool) and what the segments hold, repaired."""
    directory = disk.directory
    for tmp in directory.glob("*.tmp"):
        tmp.unlink()  # a replace() the crash interrupted; the original is intact
    paths = _segment_paths(directory)
    checkpoint = _load_checkpoint(disk, paths)
    return checkpoint, _Recovery(disk, checkpoint.committed).run(paths)


def _segment_paths(directory: Path) -> list[tuple[int, Path]]:
    found = [(seq, path) for path in directory.iterdir() if (seq := _segment_seq(path)) is not None]
    return sorted(found)


def _load_checkpoint(disk: _Disk, segments: list[tuple[int, Path]]) -> _Checkpoint:
    path = disk.directory / _CHECKPOINT
    if path.exists():
        return _read_checkpoint(path)
    if segments:
        raise SpoolCorrupt(
            f"{disk.directory}: segments without {_CHECKPOINT}; cannot tell what was already written to ClickHouse"
        )
    checkpoint = _Checkpoint(spool_id=uuid.uuid4().hex, committed=0, inflight=None)
    disk.replace(path, _checkpoint_bytes(checkpoint))
    return checkpoint


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
