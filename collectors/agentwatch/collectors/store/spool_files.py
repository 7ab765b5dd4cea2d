"""The files of an open write-ahead spool: its segments, and the digests it remembers with their journal.

:class:`~agentwatch.collectors.store.spool.Spool` owns one of each and shares its state lock with
them; :mod:`agentwatch.collectors.store.spool_format` describes the files.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from agentwatch.collectors.store.spool_format import (
    _DISK_FULL,
    _JOURNAL,
    _Disk,
    _journal_entry,
    _Pos,
    _read_journal,
    _Segment,
    _segment_path,
)

log = logging.getLogger("agentwatch.collectors.store.spool")


class _Digests:
    """Request digests of spooled records, so that a retried request is spooled once.

    The newest ``limit`` stay in memory; ``digests.log`` keeps those whose segments were deleted.
    The spool's state lock guards the map: the spool holds it to look digests up, :meth:`remember`
    them and :meth:`trim`; :meth:`journal` takes it only to read the map, and its callers hold the
    drain lock, which keeps the journal to one writer.
    """

    def __init__(self, disk: _Disk, lock: threading.Lock, limit: int) -> None:
        self._disk = disk
        self._path = disk.directory / _JOURNAL
        self._lock = lock
        self._limit = limit
        self._seqs: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._journaled_upto = 0  # every remembered digest up to this seq is in the journal
        self._journal_entries = 0

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._seqs

    def __getitem__(self, digest: bytes) -> int:
        return self._seqs[digest]

    def remember(self, digest: bytes, seq: int) -> None:
        self._seqs[digest] = seq
        self._seqs.move_to_end(digest)

    def trim(self) -> None:
        while len(self._seqs) > self._limit:
            self._seqs.popitem(last=False)

    def restore(self, from_segments: list[tuple[int, bytes]]) -> None:
        """At open: the journaled digests and those of the records still in segments."""
        journal, clean = _read_journal(self._path)
        self._journaled_upto = max((seq for seq, _ in journal), default=0)
        self._journal_entries = len(journal)
        # oldest first, so the newest record of a digest wins and eviction drops the oldest
        for seq, digest in sorted(journal + from_segments):
            self.remember(digest, seq)
        self.trim()
        if not clean:
            self._compact()

    def journal(self, upto: int) -> None:
        """Append the remembered digests with seqs up to ``upto`` before their records are deleted."""
        with self._lock:
            entries = []
            for digest, seq in reversed(self._seqs.items()):  # newest first; stop at the journaled ones
                if seq <= self._journaled_upto:
                    break
                if seq <= upto:
                    entries.append(_journal_entry(digest, seq))
        if entries:
            created = not self._path.exists()
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if created:
                    self._disk.sync_dir()  # now, as a failed write below leaves the file for the next try
                end = os.fstat(fd).st_size
                try:
                    self._disk.write(fd, b"".join(reversed(entries)), end)
                    self._disk.sync_fd(fd)
                except OSError:
                    os.ftruncate(fd, end)  # a torn entry (disk full) would hide every later one when read
                    raise
            finally:
                os.close(fd)
            self._journal_entries += len(entries)
        self._journaled_upto = max(self._journaled_upto, upto)
        if self._journal_entries > 2 * max(self._limit, 1):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the journal with only the digests still remembered (it is bounded like the memory)."""
        with self._lock:
            kept = [(digest, seq) for digest, seq in self._seqs.items() if seq <= self._journaled_upto]
        self._disk.replace(self._path, b"".join(_journal_entry(d, s) for d, s in kept))
        self._journal_entries = len(kept)


class _Segments:
    """The segment files, oldest first; appends go to the newest one, the active segment.

    The spool's state lock guards the list, which the drainer reads, and :attr:`reclaimed_bytes`;
    ``committed`` returns the last seq ClickHouse has, called holding that lock. Only the committer
    creates, writes and closes segments. Deleting them journals their digests first, so it holds
    the drain lock, which keeps the journal to one writer: the drainer's deletions after a commit,
    the committer's reclaims of the active segment; or it happens while the spool opens.
    """

    def __init__(
        self,
        disk: _Disk,
        lock: threading.Lock,
        drain_lock: threading.Lock,
        digests: _Digests,
        committed: Callable[[], int],
        *,
        segment_bytes: int,
        reclaim_bytes: int,
    ) -> None:
        self._disk = disk
        self._lock = lock
        self._drain_lock = drain_lock
        self._digests = digests
        self._committed = committed
        self._segment_bytes = segment_bytes
        self._reclaim_bytes = reclaim_bytes
        self._list: list[_Segment] = []
        self._active_fd: int | None = None
        # disk_full: a segment write hit ENOSPC/EDQUOT since the active segment was last reclaimed
        self.disk_full, self.reclaimed_bytes = False, 0

    def open(self, segments: list[_Segment]) -> None:
        """Take over the segments recovery found, deleting the committed ones, and append to the last."""
        self._list = segments
        # the last segment too: its committed records would otherwise hold their space until it
        # filled up, which on a full disk it never does; new records then start a new segment
        last = self._list[-1] if self._list else None
        self._delete_committed(active=True)
        if last is not None and not self._list:
            self.reclaimed_bytes = last.size
        if self._list:
            self._active_fd = os.open(self._list[-1].path, os.O_WRONLY)

    def end(self, next_seq: int) -> _Pos:
        """Just after the last record: the end of the last segment, or where the next one starts."""
        if self._list:
            last = self._list[-1]
            return _Pos(last.first_seq, last.size)
        return _Pos(next_seq, 0)

    def snapshot(self) -> list[tuple[int, Path, int]]:
        """Each segment's first seq, path and durable size (call holding the state lock)."""
        return [(s.first_seq, s.path, s.size) for s in self._list]

    # --- the committer's side -----------------------------------------------------------------

    def segment_for(self, size: int, next_seq: int) -> _Segment:
        """The segment the next record goes to: a new one after a reclaim or when the current one would overflow."""
        current = self._list[-1] if self._list else None
        if current is not None and (self.disk_full or current.size >= self._reclaim_bytes):
            self.reclaim_active()  # deletes (and closes) it when all its records are committed
        if current is not None and self._active_fd is not None:
            if current.size == 0 or current.size + size <= self._segment_bytes:
                return current
            # the current segment's last write is already fsynced, so only the newest segment
            # can ever hold a torn write; recovery relies on that
            os.close(self._active_fd)
            self._active_fd = None
        path = _segment_path(self._disk.directory, next_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            self._disk.sync_dir()  # the new name must survive a crash before any record in it is acknowledged
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._active_fd = fd
        segment = _Segment(next_seq, path, 0, next_seq - 1)
        with self._lock:
            self._list.append(segment)
        return segment

    def write(self, segment: _Segment, data: bytes) -> None:
        """Write records after the durable end of the active ``segment``; :meth:`sync` makes them durable."""
        assert self._active_fd is not None
        self._disk.write(self._active_fd, data, segment.size)

    def sync(self) -> None:
        assert self._active_fd is not None
        self._disk.sync_fd(self._active_fd)

    def cut_back(self, segment: _Segment) -> None:
        """Truncate the active ``segment`` to its durable end after a failed write."""
        assert self._active_fd is not None
        os.ftruncate(self._active_fd, segment.size)
        self._disk.sync_fd(self._active_fd)

    def reclaim_active(self) -> int:
        """Delete every non-empty segment whose records are all committed, the active one included.

        Returns the bytes freed (0: nothing was committed). Commits never delete the active segment,
        nor one that was active until a rotation left it behind with nothing pending. The drainer's
        lock (then the state lock: close()'s order; the drainer never waits for the committer) keeps
        the digest journal to one writer and batches unread meanwhile. The cursor then names a deleted
        segment; _iter_entries bisects past it to the start of the next one.
        """
        with self._lock:
            committed = self._committed()
            if not any(s.size and s.last_seq <= committed for s in self._list):
                return 0  # the usual case while records are pending: no need to wait for the drainer
        with self._drain_lock:
            with self._lock:
                committed = self._committed()
                victims = [s for s in self._list if s.size and s.last_seq <= committed]
                active = bool(victims) and victims[-1] is self._list[-1]
            if active and self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
            self._delete(victims)
        freed = sum(s.size for s in victims)
        with self._lock:
            self.reclaimed_bytes += freed
        self.disk_full = self.disk_full and not freed
        return freed

    # --- deleting committed segments ----------------------------------------------------------

    def delete_committed(self) -> None:
        """Delete the segments before the active one whose records are all committed (holding the drain lock)."""
        self._delete_committed(active=False)

    def _delete_committed(self, *, active: bool) -> None:
        """Delete the segments whose records are all committed, the active one only if ``active``."""
        with self._lock:
            committed = self._committed()
            victims = [s for s in self._list[: None if active else -1] if s.last_seq <= committed]
        self._delete(victims)

    def _delete(self, victims: list[_Segment]) -> None:
        """Delete committed segments, journaling their digests first (holding the drain lock, or opening)."""
        if not victims:
            return
        upto = max(s.last_seq for s in victims)
        try:
            self._digests.journal(upto)
            journaled = True
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            # no room even for the digests: free the segments, then journal into their space (a crash
            # in between forgets these digests, which beats a spool that stays full forever)
            log.warning(
                "%s: disk full (%s); deleting committed segments before journaling their digests",
                self._disk.directory,
                exc,
            )
            journaled = False
        for segment in victims:
            segment.path.unlink()
        self._disk.sync_dir()
        gone = {id(s) for s in victims}
        with self._lock:
            self._list = [s for s in self._list if id(s) not in gone]
        if not journaled:
            try:
                self._digests.journal(upto)
            except OSError as exc:  # _journaled_upto did not move: the next journal write retries them
                log.error("%s: cannot journal the digests of records up to seq %d: %s", self._disk.directory, upto, exc)

    def close(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
