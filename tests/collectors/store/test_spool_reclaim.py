"""The spool gives back the space of committed records: a disk that filled up once does not stay full.

Segments rotate only at ``segment_bytes`` (64 MiB) and commits delete only the segments before the
active one, so without reclaiming, a spool on a small disk wedged after its first ENOSPC: every
request of the size that filled the disk got 503, even after a restart, while ``pending_bytes``
said 0. These tests use a real 2 MiB tmpfs (when the kernel lets us mount one) and a simulated
full disk (a patched write), so the logic is covered either way.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentwatch.collectors.store import spool_format
from agentwatch.collectors.store.spool import Batch, Spool, SpoolError

HEADER = 28  # bytes of record framing before the digest and the payload
DISK = 2 << 20
RECORD = 64 << 10  # payload of a "normal-size" request on the small disk


def open_spool(path: Path, **kwargs: object) -> Spool:
    options: dict[str, object] = {"fsync": False, "commit_window_s": 0.0}
    options.update(kwargs)
    return Spool(path, **options)  # type: ignore[arg-type]


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.seg"))


def drain(spool: Spool) -> list[Batch]:
    batches = []
    while (batch := spool.next_batch(max_bytes=1 << 20, max_spans=1 << 20)) is not None:
        batches.append(batch)
        spool.commit(batch)
    return batches


def pending(spool: Spool) -> list[tuple[int, bytes]]:
    return [(record.seq, record.payload) for record in spool.pending_records()]


def seg(seq: int) -> str:
    return f"{seq:020d}.seg"


# --- a real small disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: writes fail with a real ENOSPC, partial pages and all."""
    target = tmp_path / "disk"
    target.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", 0, f"size={DISK}".encode()) != 0:
        code = ctypes.get_errno()
        if code == errno.EPERM:
            pytest.skip("mounting a tmpfs was refused (EPERM: no CAP_SYS_ADMIN); the simulated tests still run")
        raise OSError(code, f"mount tmpfs on {target}: {os.strerror(code)}")
    try:
        yield target
    finally:
        libc.umount2(os.fsencode(target), 2)  # MNT_DETACH: never leave a mount behind, even if a test leaked an fd


def fill_until_full(spool: Spool, tag: str) -> list[bytes]:
    """Append RECORD-sized requests until the disk refuses one; the digests of those acknowledged."""
    acked: list[bytes] = []
    with pytest.raises(SpoolError) as refused:  # noqa: PT012 - the loop runs until the disk is full
        for i in range(DISK // RECORD + 2):
            key = f"{tag}{i:03d}".encode()
            spool.append(b"x" * RECORD, spans=1, digest=key)
            acked.append(key)
    cause = refused.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.errno == errno.ENOSPC
    return acked


def test_a_full_disk_takes_normal_requests_again_once_everything_is_committed(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), open_spool(small_disk, fsync=True) as spool:
        acked = fill_until_full(spool, "a")
        assert drain(spool)
        assert spool.pending_bytes == 0
        size = sum(p.stat().st_size for p in small_disk.glob("*.seg"))
        seq = spool.append(b"x" * RECORD, spans=1, digest=b"after")  # refused forever before the fix
        assert "nothing could be reclaimed" in caplog.text  # said when the disk filled with pending records
        assert seq == len(acked) + 1
        assert names(small_disk) == [seg(seq)]
        assert spool.reclaimed_bytes == size == len(acked) * (HEADER + 4 + RECORD)
        assert spool.disk_full_errors == 1  # the refused append; the one above was not even tried on a full disk
        assert all(spool.seen(key) for key in [*acked, b"after"])
    with open_spool(small_disk, fsync=True) as spool:
        assert all(spool.seen(key) for key in acked)  # journaled when their segment went
        assert pending(spool) == [(seq, b"x" * RECORD)]


def test_a_restart_after_the_disk_filled_starts_from_an_empty_segment(small_disk: Path) -> None:
    with open_spool(small_disk, fsync=True) as spool:
        acked = fill_until_full(spool, "a")
        drain(spool)
        assert spool.pending_bytes == 0
    with open_spool(small_disk, fsync=True) as spool:
        assert spool.pending_bytes == 0
        assert spool.append(b"x" * RECORD, spans=1) == len(acked) + 1  # refused forever before the fix
        assert names(small_disk) == [seg(len(acked) + 1)]  # the committed last segment went at open
        assert spool.reclaimed_bytes == len(acked) * (HEADER + 4 + RECORD)
        assert all(spool.seen(key) for key in acked)


def test_a_continuously_drained_spool_runs_through_many_disks_worth(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = 3 * DISK // RECORD
    with caplog.at_level(logging.WARNING), open_spool(small_disk, fsync=True) as spool:
        for i in range(count):
            assert spool.append(b"x" * RECORD, spans=1, digest=b"r%03d" % i) == i + 1
            (batch,) = drain(spool)
            assert batch.token == f"spool-{spool.spool_id}-{i + 1}-{i + 1}"
        # the default reclaim_bytes is larger than this disk: ENOSPC itself triggered the reclaims
        assert spool.disk_full_errors >= 2
        assert spool.reclaimed_bytes >= count * (HEADER + 4 + RECORD) - DISK
        assert "disk full" in caplog.text
        assert "committed records from the active segment; retrying" in caplog.text
    with open_spool(small_disk, fsync=True) as spool:
        assert all(spool.seen(b"r%03d" % i) for i in range(count))


def test_reclaim_bytes_keeps_a_drained_spool_from_ever_filling_the_disk(small_disk: Path) -> None:
    with open_spool(small_disk, fsync=True, reclaim_bytes=DISK // 2) as spool:
        for i in range(3 * DISK // RECORD):
            spool.append(b"x" * RECORD, spans=1, digest=b"r%03d" % i)
            drain(spool)
        assert spool.disk_full_errors == 0
        assert spool.reclaimed_bytes > 0


# --- the threshold and recovery, on any disk --------------------------------------------------------


def test_a_committed_active_segment_is_deleted_at_the_next_append_past_reclaim_bytes(tmp_path: Path) -> None:
    with open_spool(tmp_path, reclaim_bytes=200) as spool:
        for i in range(3):
            spool.append(b"%040d" % i, spans=1, digest=b"d%d" % i)  # 70 bytes each
        assert [b.token for b in drain(spool)] == [f"spool-{spool.spool_id}-1-3"]
        assert names(tmp_path) == [seg(1)]  # nothing to write yet: kept until the next append
        assert spool.append(b"next", spans=1, digest=b"d3") == 4
        assert names(tmp_path) == [seg(4)]
        assert spool.reclaimed_bytes == 210
        assert spool.append(b"retry", spans=1, digest=b"d0") == 1  # a retry still finds its original
        assert [b.token for b in drain(spool)] == [f"spool-{spool.spool_id}-4-4"]
    with open_spool(tmp_path, reclaim_bytes=200) as spool:
        assert all(spool.seen(b"d%d" % i) for i in range(4))  # from the journal: both segments are gone
        assert names(tmp_path) == []
        assert spool.append(b"retry", spans=1, digest=b"d1") == 2
        assert spool.append(b"new", spans=1) == 5
        assert pending(spool) == [(5, b"new")]


def test_a_segment_with_uncommitted_records_is_never_reclaimed(tmp_path: Path) -> None:
    with open_spool(tmp_path, reclaim_bytes=1) as spool:
        for i in range(3):
            spool.append(b"payload-%d" % i, spans=1)
        batch = spool.next_batch(max_bytes=1 << 20, max_spans=1)
        assert batch is not None
        spool.commit(batch)
        assert spool.append(b"payload-3", spans=1) == 4
        assert names(tmp_path) == [seg(1)]
        assert [seq for seq, _ in pending(spool)] == [2, 3, 4]
        assert spool.reclaimed_bytes == 0
    with open_spool(tmp_path, reclaim_bytes=1) as spool:  # nor at open
        assert names(tmp_path) == [seg(1)]
        assert [b.token for b in drain(spool)] == [f"spool-{spool.spool_id}-2-4"]
        assert spool.append(b"payload-4", spans=1) == 5
        assert names(tmp_path) == [seg(5)]


def test_reopen_deletes_a_fully_committed_last_segment(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(3):
            spool.append(b"payload-%d" % i, spans=1, digest=b"d%d" % i)
        drain(spool)
    size = (tmp_path / seg(1)).stat().st_size
    with open_spool(tmp_path) as spool:
        assert names(tmp_path) == []
        assert spool.reclaimed_bytes == size
        assert spool.next_batch(max_bytes=100, max_spans=100) is None
        assert all(spool.seen(b"d%d" % i) for i in range(3))
        assert spool.append(b"next", spans=1) == 4
        assert names(tmp_path) == [seg(4)]
        assert pending(spool) == [(4, b"next")]
    with open_spool(tmp_path) as spool:  # an uncommitted last segment stays
        assert names(tmp_path) == [seg(4)]
        assert [b.token for b in drain(spool)] == [f"spool-{spool.spool_id}-4-4"]


def test_negative_reclaim_bytes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reclaim_bytes"):
        open_spool(tmp_path, reclaim_bytes=-1)


def test_reclaiming_under_a_concurrent_drainer_loses_and_repeats_nothing(tmp_path: Path) -> None:
    threads_n, per_thread = 4, 150
    # reclaim whenever all is committed; no memory copies, so the drainer reads every record from disk
    with open_spool(tmp_path, reclaim_bytes=0, memory_bytes=0) as spool:
        done = threading.Event()
        batches: list[Batch] = []
        errors: list[BaseException] = []

        def drainer() -> None:
            try:
                while not done.is_set() or spool.pending_spans:
                    spool.wait_for_data(0.01)
                    if (batch := spool.next_batch(max_bytes=300, max_spans=5)) is not None:
                        batches.append(batch)
                        spool.commit(batch)
            except BaseException as exc:
                errors.append(exc)

        def appender(t: int) -> None:
            for i in range(per_thread):
                spool.append(b"t%d-%03d" % (t, i), spans=1, digest=b"t%d-%03d" % (t, i))
                deadline = time.monotonic() + 1.0
                while i % 10 == 9 and spool.pending_spans and time.monotonic() < deadline:
                    time.sleep(0.0005)  # let the drainer catch up now and then: only then is there anything to reclaim

        drain_thread = threading.Thread(target=drainer)
        drain_thread.start()
        appenders = [threading.Thread(target=appender, args=(t,)) for t in range(threads_n)]
        for thread in appenders:
            thread.start()
        for thread in appenders:
            thread.join()
        done.set()
        drain_thread.join(timeout=60)
        assert errors == []
        rows = b"\n".join(b.payload for b in batches).split(b"\n")
        assert sorted(rows) == sorted(b"t%d-%03d" % (t, i) for t in range(threads_n) for i in range(per_thread))
        assert [(b.first_seq, b.last_seq) for b in batches] == sorted((b.first_seq, b.last_seq) for b in batches)
        assert all(a.last_seq + 1 == b.first_seq for a, b in itertools.pairwise(batches))
        assert spool.reclaimed_bytes > 0
    with open_spool(tmp_path) as spool:
        assert names(tmp_path) == []
        assert all(spool.seen(row) for row in rows)


# --- a simulated full disk ------------------------------------------------------------------------


class FullDisk:
    """Fails the next writes to files with a given suffix as a full disk does: part written, then an error."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, code: int = errno.ENOSPC) -> None:
        self.code = code
        self.failures: dict[str, int] = {}
        real: Callable[[int, bytes, int], None] = spool_format._write_all

        def write_all(fd: int, data: bytes, offset: int) -> None:
            name = os.readlink(f"/proc/self/fd/{fd}")
            suffix = next((s for s, n in self.failures.items() if n and name.endswith(s)), None)
            if suffix is None:
                real(fd, data, offset)
                return
            self.failures[suffix] -= 1
            real(fd, data[: len(data) // 2], offset)
            raise OSError(self.code, os.strerror(self.code))

        monkeypatch.setattr(spool_format, "_write_all", write_all)


def committed_spool(path: Path) -> tuple[Spool, int]:
    """A spool whose active segment holds three committed records; and that segment's size."""
    spool = open_spool(path)
    for i in range(3):
        spool.append(b"payload-%d" % i, spans=1, digest=b"d%d" % i)
    drain(spool)
    return spool, (path / seg(1)).stat().st_size


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_write_that_finds_the_disk_full_is_retried_after_reclaiming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int
) -> None:
    disk = FullDisk(monkeypatch, code)
    spool, size = committed_spool(tmp_path)
    with caplog.at_level(logging.WARNING), spool:
        disk.failures[".seg"] = 1
        assert spool.append(b"after", spans=1, digest=b"after") == 4
        assert names(tmp_path) == [seg(4)]
        assert (tmp_path / seg(4)).stat().st_size == HEADER + 5 + 5  # just the record: no half write
        assert (spool.disk_full_errors, spool.reclaimed_bytes) == (1, size)
    assert f"disk full ([Errno {code}]" in caplog.text
    assert f"reclaimed {size} bytes of committed records" in caplog.text
    assert "ERROR" not in caplog.text
    with open_spool(tmp_path) as spool:
        assert pending(spool) == [(4, b"after")]
        assert all(spool.seen(key) for key in (b"d0", b"d1", b"d2", b"after"))


def test_a_full_disk_with_uncommitted_records_fails_the_append_then_reclaims_after_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(monkeypatch)
    with caplog.at_level(logging.WARNING), open_spool(tmp_path) as spool:
        for i in range(3):
            spool.append(b"payload-%d" % i, spans=1)
        size = (tmp_path / seg(1)).stat().st_size
        disk.failures[".seg"] = 1
        with pytest.raises(SpoolError, match="No space left"):
            spool.append(b"refused", spans=1)
        assert "nothing could be reclaimed: 111 bytes of records are not committed" in caplog.text
        assert (tmp_path / seg(1)).stat().st_size == size  # the half write was cut off
        assert [seq for seq, _ in pending(spool)] == [1, 2, 3]
        drain(spool)
        # far below reclaim_bytes, but the disk was full: reclaimed before the next write
        assert spool.append(b"accepted", spans=1) == 4
        assert names(tmp_path) == [seg(4)]
        assert (spool.disk_full_errors, spool.reclaimed_bytes) == (1, size)
        assert spool.append(b"more", spans=1) == 5
        assert names(tmp_path) == [seg(4)]  # back to normal: no reclaim while records are pending


def test_a_disk_still_full_after_reclaiming_fails_the_append_but_not_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(monkeypatch)
    spool, size = committed_spool(tmp_path)
    with caplog.at_level(logging.WARNING), spool:
        disk.failures[".seg"] = 2
        with pytest.raises(SpoolError, match="No space left"):
            spool.append(b"refused", spans=1)
        assert "even after reclaiming" in caplog.text
        assert (spool.disk_full_errors, spool.reclaimed_bytes) == (2, size)
        assert names(tmp_path) == [seg(4)]
        assert (tmp_path / seg(4)).stat().st_size == 0
        assert spool.append(b"accepted", spans=1) == 4
    with open_spool(tmp_path) as spool:
        assert pending(spool) == [(4, b"accepted")]


def test_no_room_for_the_digest_journal_still_frees_the_segment_and_keeps_the_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(monkeypatch)
    spool, size = committed_spool(tmp_path)
    with caplog.at_level(logging.WARNING), spool:
        disk.failures.update({".seg": 1, "digests.log": 1})
        assert spool.append(b"after", spans=1) == 4
        assert "deleting committed segments before journaling their digests" in caplog.text
        assert spool.reclaimed_bytes == size
    entries, clean = spool_format._read_journal(tmp_path / "digests.log")
    assert clean  # the torn journal append was cut off, so later entries stay readable
    assert sorted(entries) == [(1, b"d0"), (2, b"d1"), (3, b"d2")]
    with open_spool(tmp_path) as spool:
        assert all(spool.seen(b"d%d" % i) for i in range(3))


def test_a_committed_segment_left_behind_by_a_rotation_is_reclaimed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch)
    with open_spool(tmp_path, segment_bytes=100) as spool:
        spool.append(b"x" * 32, spans=1)  # 60 bytes: the next record does not fit this segment
        drain(spool)  # the active segment stays; nothing pending, so no commit will delete it later
        disk.failures[".seg"] = 1
        assert spool.append(b"y" * 32, spans=1) == 2  # rotated, found the disk full, reclaimed the old one
        assert names(tmp_path) == [seg(2)]
        assert (spool.disk_full_errors, spool.reclaimed_bytes) == (1, 60)


def test_other_write_errors_reclaim_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(monkeypatch, errno.EIO)
    spool, _ = committed_spool(tmp_path)
    with caplog.at_level(logging.WARNING), spool:
        disk.failures[".seg"] = 1
        with pytest.raises(SpoolError, match="Input/output error"):
            spool.append(b"refused", spans=1)
        assert "spool write failed" in caplog.text
        assert (spool.disk_full_errors, spool.reclaimed_bytes) == (0, 0)
        assert names(tmp_path) == [seg(1)]
        assert spool.append(b"accepted", spans=1) == 4
        assert names(tmp_path) == [seg(1)]
