"""The write-ahead spool: durability across kill -9, torn writes, corruption, capacity, dedup, concurrency.

Crashes are real: child processes append and are killed with SIGKILL, or hit a real write error
(a file size limit). ClickHouse is modelled by a sink that keeps the first insert per dedup token,
which is what ``insert_deduplication_token`` gives, so the tests show end-to-end exactly-once.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from agentwatch.collectors.store.spool import Batch, Record, Spool, SpoolCorrupt, SpoolError, SpoolFull

HEADER = 28  # bytes of record framing before the digest and the payload


def open_spool(path: Path, **kwargs: object) -> Spool:
    options: dict[str, object] = {"fsync": False, "commit_window_s": 0.0}
    options.update(kwargs)
    return Spool(path, **options)  # type: ignore[arg-type]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def drain(spool: Spool, *, max_bytes: int = 1 << 20, max_spans: int = 1 << 20) -> list[Batch]:
    batches = []
    while (batch := spool.next_batch(max_bytes=max_bytes, max_spans=max_spans)) is not None:
        batches.append(batch)
        spool.commit(batch)
    return batches


def pending(spool: Spool) -> list[tuple[int, bytes]]:
    return [(record.seq, record.payload) for record in spool.pending_records()]


def digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


# --- basics -----------------------------------------------------------------------------------


def test_append_next_batch_commit_round_trip(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        assert spool.next_batch(max_bytes=100, max_spans=100) is None
        assert [spool.append(p, spans=2) for p in (b'{"a":1}', b'{"a":2}', b'{"a":3}')] == [1, 2, 3]
        assert spool.pending_spans == 6
        assert spool.pending_bytes == 3 * (HEADER + 7)
        batch = spool.next_batch(max_bytes=100, max_spans=100)
        assert batch is not None
        assert (batch.first_seq, batch.last_seq, batch.spans) == (1, 3, 6)
        assert batch.payload == b'{"a":1}\n{"a":2}\n{"a":3}'
        assert batch.token == f"spool-{spool.spool_id}-1-3"
        spool.commit(batch)
        assert spool.next_batch(max_bytes=100, max_spans=100) is None
        assert (spool.pending_bytes, spool.pending_spans) == (0, 0)
        assert spool.capacity_bytes == 1 << 30


def test_batches_respect_span_and_byte_limits_but_always_take_one_record(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i, spans in enumerate([3, 3, 3, 50, 1]):
            spool.append(b"x" * (10 + i), spans=spans)
        batches = drain(spool, max_bytes=1000, max_spans=6)
        assert [(b.first_seq, b.last_seq, b.spans) for b in batches] == [(1, 2, 6), (3, 3, 3), (4, 4, 50), (5, 5, 1)]
        for _ in range(3):
            spool.append(b"y" * 10, spans=1)
        # 10 + 1 + 10 = 21 bytes joined: two fit in 21, not three
        assert [(b.first_seq, b.last_seq) for b in drain(spool, max_bytes=21, max_spans=100)] == [(6, 7), (8, 8)]
        spool.append(b"z" * 500, spans=1)
        (big,) = drain(spool, max_bytes=10, max_spans=100)
        assert big.payload == b"z" * 500


def test_uncommitted_batch_comes_back_unchanged_and_only_it_commits(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(4):
            spool.append(b"r%d" % i, spans=1)
        batch = spool.next_batch(max_bytes=100, max_spans=2)
        assert batch is not None
        spool.append(b"late", spans=1)
        assert spool.next_batch(max_bytes=1 << 20, max_spans=1000) == batch  # a retry after a failed insert
        with pytest.raises(ValueError, match="not the batch in flight"):
            spool.commit(Batch(3, 4, 2, b"r2\nr3", spool.spool_id))
        spool.commit(batch)
        with pytest.raises(ValueError, match="not the batch in flight"):
            spool.commit(batch)  # twice
        assert [b.payload for b in drain(spool)] == [b"r2\nr3\nlate"]


def test_reopen_replays_only_uncommitted_records(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(8):
            spool.append(b"p%d" % i, spans=i)
        last = 0
        for _ in range(2):  # 0+1+2 spans, then 3: seqs 1-4 reach ClickHouse
            batch = spool.next_batch(max_bytes=1 << 20, max_spans=3)
            assert batch is not None
            spool.commit(batch)
            last = batch.last_seq
        assert last == 4
    with open_spool(tmp_path) as spool:
        assert pending(spool) == [(5, b"p4"), (6, b"p5"), (7, b"p6"), (8, b"p7")]
        assert spool.pending_spans == 4 + 5 + 6 + 7
        assert spool.append(b"p8", spans=1) == 9
        (batch,) = drain(spool)
        assert batch.payload == b"p4\np5\np6\np7\np8"


def test_inflight_batch_is_the_same_batch_after_reopen(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(5):
            spool.append(b"r%d" % i, spans=1)
        before = spool.next_batch(max_bytes=1 << 20, max_spans=2)
        assert before is not None
    with open_spool(tmp_path) as spool:
        spool.append(b"more", spans=1)
        # different limits, more data: still exactly the batch (and token) handed out before
        after = spool.next_batch(max_bytes=1 << 20, max_spans=1000)
        assert after == before
        assert after is not None
        assert after.token == before.token
        spool.commit(after)
        assert [b.payload for b in drain(spool)] == [b"r2\nr3\nr4\nmore"]


def test_inflight_batch_survives_sigkill(tmp_path: Path) -> None:
    child = f"""
        import os, signal
        from agentwatch.collectors.store.spool import Spool
        spool = Spool({str(tmp_path)!r})
        for i in range(5):
            spool.append(b"r%d" % i, spans=1)
        batch = spool.next_batch(max_bytes=1 << 20, max_spans=3)
        print(batch.token, batch.payload.decode().replace(chr(10), "|"), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(child)], capture_output=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    token, payload = proc.stdout.decode().split()
    with Spool(tmp_path) as spool:
        spool.append(b"after", spans=1)
        batch = spool.next_batch(max_bytes=1 << 20, max_spans=1000)
        assert batch is not None
        assert (batch.token, batch.payload) == (token, payload.replace("|", "\n").encode())


def test_tokens_differ_between_spools_with_the_same_seqs(tmp_path: Path) -> None:
    tokens = set()
    for name in ("a", "b"):
        with open_spool(tmp_path / name) as spool:
            spool.append(b"x", spans=1)
            batch = spool.next_batch(max_bytes=10, max_spans=10)
            assert batch is not None
            assert (batch.first_seq, batch.last_seq) == (1, 1)
            tokens.add(batch.token)
    assert len(tokens) == 2  # two collectors writing to one ClickHouse never dedup each other's data


def test_pending_records_and_record_type(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append(b"one", spans=4)
        assert list(spool.pending_records()) == [Record(1, 4, b"one")]


# --- capacity ---------------------------------------------------------------------------------


def test_spool_full_rejects_without_writing_and_accepts_after_commit(tmp_path: Path) -> None:
    record = HEADER + 100
    with open_spool(tmp_path, max_bytes=3 * record) as spool:
        for _ in range(3):
            spool.append(b"x" * 100, spans=1)
        size = segments(tmp_path)[-1].stat().st_size
        with pytest.raises(SpoolFull):
            spool.append(b"x" * 100, spans=1)
        with pytest.raises(SpoolFull):
            spool.append(b"x", spans=1, digest=b"new")
        assert segments(tmp_path)[-1].stat().st_size == size
        assert spool.pending_bytes == 3 * record
        assert not spool.seen(b"new")
        batch = spool.next_batch(max_bytes=100, max_spans=1)
        assert batch is not None
        with pytest.raises(SpoolFull):
            spool.append(b"x" * 100, spans=1)  # handed out is not yet committed
        spool.commit(batch)
        assert spool.append(b"x" * 100, spans=1) == 4
    with open_spool(tmp_path, max_bytes=3 * record) as spool:
        assert spool.pending_bytes == 3 * record  # capacity accounting survives a restart
        with pytest.raises(SpoolFull):
            spool.append(b"", spans=0)


def test_concurrent_appends_never_overshoot_the_capacity(tmp_path: Path) -> None:
    record = HEADER + 100
    with Spool(tmp_path, max_bytes=5 * record) as spool:  # real fsync: appends queue up behind it
        barrier = threading.Barrier(16)
        outcomes: list[str] = []

        def append() -> None:
            barrier.wait()
            try:
                spool.append(b"x" * 100, spans=1)
                outcomes.append("ok")
            except SpoolFull:
                outcomes.append("full")

        threads = [threading.Thread(target=append) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["full"] * 11 + ["ok"] * 5  # queued appends hold their room
        assert spool.pending_bytes == 5 * record


def test_records_that_can_never_fit_are_refused(tmp_path: Path) -> None:
    with open_spool(tmp_path, max_bytes=1000) as spool:
        with pytest.raises(ValueError, match="never fit"):
            spool.append(b"x" * 1000, spans=1)
        with pytest.raises(ValueError, match="spans"):
            spool.append(b"x", spans=-1)
        with pytest.raises(ValueError, match="digest"):
            spool.append(b"x", spans=1, digest=b"d" * 256)


# --- segments ---------------------------------------------------------------------------------


def test_segments_rotate_and_committed_ones_are_deleted(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=300) as spool:
        for i in range(30):
            spool.append(b"%040d" % i, spans=1, digest=b"d%d" % i)  # 70 bytes each: 4 per segment
        names = [p.name for p in segments(tmp_path)]
        assert len(names) == 8
        assert names[:3] == ["00000000000000000001.seg", "00000000000000000005.seg", "00000000000000000009.seg"]
        drain(spool, max_bytes=1 << 20, max_spans=6)
        assert [p.name for p in segments(tmp_path)] == ["00000000000000000029.seg"]  # only the active one
        assert spool.pending_bytes == 0
        assert all(spool.seen(b"d%d" % i) for i in range(30))
    with open_spool(tmp_path, segment_bytes=300) as spool:
        assert all(spool.seen(b"d%d" % i) for i in range(30))  # from the digest journal
        assert spool.append(b"next", spans=1) == 31
        assert pending(spool) == [(31, b"next")]


def test_a_record_larger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=100) as spool:
        spool.append(b"a", spans=1)
        spool.append(b"b" * 500, spans=1)
        spool.append(b"c", spans=1)
        assert [p.name[-6:] for p in segments(tmp_path)] == ["01.seg", "02.seg", "03.seg"]
        assert [b.payload for b in drain(spool, max_bytes=10, max_spans=10)] == [b"a", b"b" * 500, b"c"]


# --- torn writes and corruption ---------------------------------------------------------------


def fill(path: Path, count: int, **kwargs: object) -> None:
    with open_spool(path, **kwargs) as spool:
        for i in range(count):
            spool.append(b"payload-%02d" % i, spans=1)


@pytest.mark.parametrize("cut", [1, 5, HEADER, HEADER + 3])
def test_torn_tail_is_truncated_and_seqs_continue(tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, 5)
    (segment,) = segments(tmp_path)
    record = HEADER + 10
    os.truncate(segment, 5 * record - cut)
    with caplog.at_level(logging.WARNING), open_spool(tmp_path) as spool:
        assert [seq for seq, _ in pending(spool)] == [1, 2, 3, 4]
        assert segment.stat().st_size == 4 * record
        assert spool.pending_bytes == 4 * record
        assert spool.append(b"payload-xx", spans=1) == 5
        assert [b.payload.count(b"\n") + 1 for b in drain(spool)] == [5]
    assert "torn write" in caplog.text
    assert not list(tmp_path.glob("*.corrupt"))


@pytest.mark.parametrize(
    "garbage", [b"\0" * 4096, b"AWS1" + os.urandom(100), os.urandom(7)], ids=["zeros", "magic-then-noise", "noise"]
)
def test_garbage_after_the_last_record_is_a_torn_write(tmp_path: Path, garbage: bytes) -> None:
    fill(tmp_path, 3)
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(garbage)
    with open_spool(tmp_path) as spool:
        assert [seq for seq, _ in pending(spool)] == [1, 2, 3]
        assert segment.stat().st_size == size


@pytest.mark.parametrize(("where", "what"), [(HEADER + 2, "payload"), (0, "magic"), (4, "length"), (8, "seq")])
def test_damage_inside_a_segment_is_quarantined_and_the_rest_kept(
    tmp_path: Path, where: int, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tmp_path, 6)
    (segment,) = segments(tmp_path)
    record = HEADER + 10
    data = bytearray(segment.read_bytes())
    data[2 * record + where] ^= 0x40  # damage record 3 of 6
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR), open_spool(tmp_path) as spool:
        assert [seq for seq, _ in pending(spool)] == [1, 2, 4, 5, 6], what
        assert spool.pending_spans == 5
        assert spool.append(b"after", spans=1) == 7
    (corrupt,) = tmp_path.glob("*.corrupt")
    assert corrupt.read_bytes() == bytes(data[2 * record : 3 * record])
    assert "damaged bytes" in caplog.text
    with open_spool(tmp_path) as spool:  # the quarantine is done once; the spool is clean now
        assert [seq for seq, _ in pending(spool)] == [1, 2, 4, 5, 6, 7]


def test_a_damaged_tail_in_an_older_segment_is_quarantined_not_truncated(tmp_path: Path) -> None:
    fill(tmp_path, 9, segment_bytes=3 * (HEADER + 10))
    first, second, third = segments(tmp_path)
    os.truncate(second, second.stat().st_size - 4)  # record 6 damaged; segment 3 was written after it
    with open_spool(tmp_path) as spool:
        assert [seq for seq, _ in pending(spool)] == [1, 2, 3, 4, 5, 7, 8, 9]
    assert len(list(tmp_path.glob(f"{second.name}.*.corrupt"))) == 1
    assert first.exists()
    assert third.exists()


def test_quarantined_inflight_records_keep_the_batch_token(tmp_path: Path) -> None:
    fill(tmp_path, 4)
    with open_spool(tmp_path) as spool:
        before = spool.next_batch(max_bytes=1 << 20, max_spans=2)
        assert before is not None
    (segment,) = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[HEADER + 3] ^= 1  # record 1's payload
    segment.write_bytes(bytes(data))
    with open_spool(tmp_path) as spool:
        after = spool.next_batch(max_bytes=1 << 20, max_spans=100)
        assert after is not None
        # same token: if the first insert reached ClickHouse, the replay is dropped as a duplicate
        assert (after.token, after.payload) == (before.token, b"payload-01")


def _damage_last_byte(tmp_path: Path) -> None:
    (segment,) = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[-1] ^= 1
    segment.write_bytes(bytes(data))


def test_damage_after_recovery_is_reported_when_read(tmp_path: Path) -> None:
    with open_spool(tmp_path, memory_bytes=0) as spool:  # every record is read back from disk
        spool.append(b"payload-00", spans=1)
        _damage_last_byte(tmp_path)
        with pytest.raises(SpoolCorrupt, match="offset 0"):
            spool.next_batch(max_bytes=100, max_spans=100)


def test_records_in_memory_are_drained_as_acknowledged_and_evicted_on_commit(tmp_path: Path) -> None:
    # room for two of the three payloads: the third is read back from disk
    with open_spool(tmp_path, memory_bytes=20) as spool:
        for index in range(3):
            spool.append(f"payload-{index:02d}".encode(), spans=1)
        (segment,) = segments(tmp_path)
        data = segment.read_bytes()
        segment.write_bytes(data.replace(b"payload-00", b"PAYLOAD-00"))  # the disk copy of a record in memory
        batch = spool.next_batch(max_bytes=100, max_spans=100)
        assert batch is not None
        assert batch.payload == b"payload-00\npayload-01\npayload-02"  # what was acknowledged
        spool.commit(batch)
        assert spool._memory_bytes == 0  # committed records leave memory
        spool.append(b"payload-03", spans=1)
        assert spool._memory_bytes == 10
    with open_spool(tmp_path) as spool:  # after a restart, records come from disk again
        assert [record.payload for record in spool.pending_records()] == [b"payload-03"]


def test_missing_or_unreadable_checkpoint_refuses_to_guess(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    checkpoint = tmp_path / "checkpoint.json"
    checkpoint.write_text("{not json")
    with pytest.raises(SpoolCorrupt, match="unreadable spool checkpoint"):
        open_spool(tmp_path)
    checkpoint.unlink()
    with pytest.raises(SpoolCorrupt, match="segments without checkpoint"):
        open_spool(tmp_path)


# --- digests ----------------------------------------------------------------------------------


def test_digests_dedup_retries_and_survive_reopen(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        assert not spool.seen(b"req-1")
        seq = spool.append(b"rows", spans=3, digest=b"req-1")
        assert spool.seen(b"req-1")
        size = spool.pending_bytes
        assert spool.append(b"rows", spans=3, digest=b"req-1") == seq  # a retry: nothing written twice
        assert spool.pending_bytes == size
    with open_spool(tmp_path) as spool:
        assert spool.seen(b"req-1")  # restored from the segment
        drain(spool)
        assert spool.append(b"rows", spans=3, digest=b"req-1") == seq
        assert spool.pending_spans == 0


def test_digest_memory_is_bounded_and_the_bound_survives_restarts(tmp_path: Path) -> None:
    with open_spool(tmp_path, digest_memory=3, segment_bytes=100) as spool:
        for i in range(6):
            spool.append(b"x" * 30, spans=1, digest=b"d%d" % i)
        assert [spool.seen(b"d%d" % i) for i in range(6)] == [False] * 3 + [True] * 3
        drain(spool)  # deletes all but the active segment: the digests live on in the journal
    for _ in range(2):
        with open_spool(tmp_path, digest_memory=3, segment_bytes=100) as spool:
            assert [spool.seen(b"d%d" % i) for i in range(6)] == [False] * 3 + [True] * 3
    with open_spool(tmp_path, digest_memory=3, segment_bytes=100) as spool:
        for i in range(6, 30):  # enough to compact the journal
            spool.append(b"x" * 30, spans=1, digest=b"d%d" % i)
            drain(spool)
    assert (tmp_path / "digests.log").stat().st_size <= 6 * (9 + 3 + 4)
    with open_spool(tmp_path, digest_memory=3) as spool:
        assert [i for i in range(30) if spool.seen(b"d%d" % i)] == [27, 28, 29]


def test_concurrent_retries_of_one_request_are_spooled_once(tmp_path: Path) -> None:
    with open_spool(tmp_path, fsync=True) as spool:
        barrier = threading.Barrier(8)
        seqs: list[int] = []

        def retry() -> None:
            barrier.wait()
            seqs.append(spool.append(b"same body", spans=2, digest=b"same"))

        threads = [threading.Thread(target=retry) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seqs == [1] * 8
        assert pending(spool) == [(1, b"same body")]


# --- concurrency and group commit -------------------------------------------------------------


def test_concurrent_appends_get_unique_seqs_and_share_fsyncs(tmp_path: Path) -> None:
    threads_n, per_thread = 16, 200
    with Spool(tmp_path, segment_bytes=64 << 10) as spool:  # real fsync, default commit window
        acked: dict[int, bytes] = {}
        lock = threading.Lock()

        def worker(t: int) -> None:
            for i in range(per_thread):
                payload = b"t%02d-%04d" % (t, i)
                seq = spool.append(payload, spans=1)
                with lock:
                    assert seq not in acked
                    acked[seq] = payload

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = threads_n * per_thread
        assert sorted(acked) == list(range(1, total + 1))
        assert spool.appended_records == total
        assert spool.write_groups < total / 2  # group commit: many appends per write + fsync
        assert dict(pending(spool)) == acked
        rows = b"\n".join(b.payload for b in drain(spool, max_bytes=4096, max_spans=100)).split(b"\n")
        assert rows == [acked[seq] for seq in sorted(acked)]
        assert len(segments(tmp_path)) == 1


def test_wait_for_data(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        assert not spool.wait_for_data(0.01)
        timer = threading.Timer(0.05, lambda: spool.append(b"x", spans=1))
        timer.start()
        started = time.monotonic()
        assert spool.wait_for_data(5.0)
        assert time.monotonic() - started < 4.0
        timer.join()
        batch = spool.next_batch(max_bytes=10, max_spans=10)
        assert batch is not None
        assert spool.wait_for_data(0)  # a batch in flight is still data
        spool.commit(batch)
        assert not spool.wait_for_data(0)


def test_lock_close_and_reuse(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(SpoolError, match="in use"):
        open_spool(tmp_path)
    spool.append(b"x", spans=1)
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append(b"y", spans=1)
    with pytest.raises(SpoolError, match="closed"):
        spool.next_batch(max_bytes=10, max_spans=10)
    with open_spool(tmp_path) as again:
        assert pending(again) == [(1, b"x")]


# --- real write failures ----------------------------------------------------------------------

_FSIZE_CHILD = """
    import resource, signal, sys
    from agentwatch.collectors.store.spool import Spool, SpoolError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
    spool = Spool(sys.argv[1], segment_bytes=1 << 20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    for i in range(100):
        try:
            seq = spool.append(bytes([65 + i % 26]) * 10000, spans=1)
        except SpoolError as exc:
            print("error", i, exc, flush=True)
            break
        print("ack", i, seq, flush=True)
    print("ack small", spool.append(b"small", spans=1), flush=True)
    spool.close()
"""


def test_a_failed_write_is_never_acknowledged_nor_left_half_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = [sys.executable, "-c", textwrap.dedent(_FSIZE_CHILD), str(tmp_path)]
    proc = subprocess.run(args, capture_output=True, timeout=60, check=True)
    lines = proc.stdout.decode().splitlines()
    expected = [["ack", str(i)] for i in range(6)] + [["error", "6"], ["ack", "small"]]
    assert [line.split()[:2] for line in lines] == expected
    assert "File too large" in lines[6]
    assert lines[-1] == "ack small 7"  # the failed record's seq was never durable, so it is reused
    with caplog.at_level(logging.WARNING), open_spool(tmp_path) as spool:
        records = pending(spool)
    assert [seq for seq, _ in records] == list(range(1, 8))
    assert [payload[:1] for _, payload in records] == [b"A", b"B", b"C", b"D", b"E", b"F", b"s"]
    assert not caplog.text  # nothing torn, nothing quarantined: the failed write was cut off cleanly


# --- kill -9 end to end -----------------------------------------------------------------------

_CRASH_CHILD = """
    import base64, hashlib, json, os, random, sys, threading, time
    from agentwatch.collectors.store.spool import Spool
    directory, prefix, sink, retries = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    spool = Spool(directory, segment_bytes=8192, digest_memory=1 << 20)
    out = threading.Lock()

    def ack(name, payload):
        seq = spool.append(payload, spans=1, digest=hashlib.sha256(payload).digest())
        with out:
            sys.stdout.write(f"ack {name} {seq}\\n")
            sys.stdout.flush()

    def appender(t):
        for i in range(10 ** 9):
            name = f"{prefix}-{t}-{i}"
            ack(name, json.dumps({"id": name}).encode())

    def drainer():
        fd = os.open(sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        while True:
            spool.wait_for_data(0.05)
            batch = spool.next_batch(max_bytes=2048, max_spans=random.randint(1, 12))
            if batch is None:
                continue
            if random.random() < 0.3:
                time.sleep(0.002)  # die more often between handing out and inserting
            line = {"token": batch.token, "first": batch.first_seq, "last": batch.last_seq,
                    "payload": base64.b64encode(batch.payload).decode()}
            os.write(fd, json.dumps(line).encode() + b"\\n")  # the "insert"
            if random.random() < 0.5:
                time.sleep(0.003)  # ... and between inserting and committing
            spool.commit(batch)

    for name in filter(None, retries.split(",")):  # clients retrying requests acked before the crash
        ack(name, json.dumps({"id": name}).encode())
    threading.Thread(target=drainer, daemon=True).start()
    for t in range(4):
        threading.Thread(target=appender, args=(t,), daemon=True).start()
    time.sleep(60)
"""


@dataclass
class DedupSink:
    """ClickHouse as the spool sees it: an insert whose token was seen before is dropped."""

    batches: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)

    def insert(self, token: str, first: int, last: int, payload: bytes) -> None:
        if token in self.batches:
            # the dedup token only works if a replay is byte-for-byte the same batch
            assert self.batches[token] == (first, last, payload), f"replayed {token} differs"
            return
        self.batches[token] = (first, last, payload)

    def load(self, path: Path) -> None:
        if not path.exists():
            return
        text = path.read_text()
        for line in text.splitlines(keepends=True):
            if line.endswith("\n"):  # a line the kill cut short is an insert that did not happen
                doc = json.loads(line)
                self.insert(doc["token"], doc["first"], doc["last"], base64.b64decode(doc["payload"]))


def run_and_kill(directory: Path, prefix: str, sink: Path, retries: list[str], acks: int) -> list[tuple[str, int]]:
    """Run the crash child until it acknowledged ``acks`` appends, SIGKILL it, return every (name, seq) it acked."""
    args = [sys.executable, "-c", textwrap.dedent(_CRASH_CHILD), str(directory), prefix, str(sink), ",".join(retries)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[bytes] = []
    while len(lines) < acks and (out := proc.stdout.readline()):
        lines.append(out)
    os.kill(proc.pid, signal.SIGKILL)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert len(lines) >= acks, err.decode()
    acked = []
    for line in (b"".join(lines) + rest).decode().splitlines(keepends=True):
        if line.endswith("\n"):  # a line the kill cut short never reached a client either
            _, name, seq = line.split()
            acked.append((name, int(seq)))
    return acked


def row(name: str) -> bytes:
    return json.dumps({"id": name}).encode()


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged_and_duplicates_nothing(tmp_path: Path) -> None:
    directory, sink_file = tmp_path / "spool", tmp_path / "sink.jsonl"
    acked: dict[str, int] = {}
    for round_ in range(4):
        retries = sorted(acked)[::7][:15]
        for name, seq in run_and_kill(directory, f"r{round_}", sink_file, retries, acks=150 + 50 * round_):
            # a client retrying a request acknowledged before the crash gets the original record back
            assert acked.setdefault(name, seq) == seq, f"{name} spooled twice"
    sink = DedupSink()
    sink.load(sink_file)
    with Spool(directory) as spool:
        assert all(spool.seen(digest(row(name))) for name in acked)
        for batch in drain(spool, max_bytes=4096, max_spans=9):
            sink.insert(batch.token, batch.first_seq, batch.last_seq, batch.payload)
    counts: Counter[str] = Counter()
    ranges: dict[str, tuple[int, int]] = {}
    for first, last, payload in sink.batches.values():
        for line in payload.split(b"\n"):
            name = json.loads(line)["id"]  # a torn or foreign record would not parse
            counts[name] += 1
            ranges[name] = (first, last)
    assert [name for name, n in counts.items() if n > 1] == []
    assert sorted(set(acked) - set(counts)) == []
    assert all(ranges[name][0] <= seq <= ranges[name][1] for name, seq in acked.items())
    spans = sorted((first, last) for first, last, _ in sink.batches.values())
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert len(acked) >= 4 * 150


# --- model-based test -------------------------------------------------------------------------


class SpoolMachine(RuleBasedStateMachine):
    """Random append / next_batch / commit / reopen / torn-write sequences against a simple model."""

    MAX_BYTES = 600
    DIGESTS = 4

    def __init__(self) -> None:
        super().__init__()
        self.path = Path(tempfile.mkdtemp(prefix="spool-machine-"))
        self.spool = self.open()
        self.records: dict[int, tuple[bytes, int, bytes]] = {}  # uncommitted seq -> (payload, spans, digest)
        self.digests: OrderedDict[bytes, int] = OrderedDict()
        self.inflight: Batch | None = None
        self.last_seq = 0

    def open(self) -> Spool:
        # reclaim_bytes below segment_bytes: fully committed active segments are deleted early too
        return open_spool(
            self.path, max_bytes=self.MAX_BYTES, segment_bytes=150, digest_memory=self.DIGESTS, reclaim_bytes=100
        )

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.path)

    @rule(payload=st.binary(max_size=60), spans=st.integers(0, 4), tag=st.none() | st.integers(0, 6))
    def append(self, payload: bytes, spans: int, tag: int | None) -> None:
        key = b"" if tag is None else b"req-%d" % tag
        if key and key in self.digests:
            assert self.spool.append(payload, spans=spans, digest=key) == self.digests[key]
            return
        size = HEADER + len(key) + len(payload)
        if sum(HEADER + len(d) + len(p) for p, _, d in self.records.values()) + size > self.MAX_BYTES:
            with pytest.raises(SpoolFull):
                self.spool.append(payload, spans=spans, digest=key or None)
            return
        seq = self.spool.append(payload, spans=spans, digest=key or None)
        assert seq == self.last_seq + 1
        self.last_seq = seq
        self.records[seq] = (payload, spans, key)
        if key:
            self.digests[key] = seq
            while len(self.digests) > self.DIGESTS:
                self.digests.popitem(last=False)

    @rule(max_bytes=st.integers(0, 200), max_spans=st.integers(0, 8))
    def next_batch(self, max_bytes: int, max_spans: int) -> None:
        batch = self.spool.next_batch(max_bytes=max_bytes, max_spans=max_spans)
        if self.inflight is not None:
            assert batch == self.inflight
            return
        expected = self.expected_batch(max_bytes, max_spans)
        if expected is None:
            assert batch is None
        else:
            assert batch is not None
            assert (batch.first_seq, batch.last_seq, batch.spans, batch.payload) == expected
        self.inflight = batch

    def expected_batch(self, max_bytes: int, max_spans: int) -> tuple[int, int, int, bytes] | None:
        taken: list[int] = []
        size = spans = 0
        for seq in sorted(self.records):
            payload, n, _ = self.records[seq]
            grown = size + len(payload) + (1 if taken else 0)
            if taken and (grown > max_bytes or spans + n > max_spans):
                break
            taken.append(seq)
            size, spans = grown, spans + n
        if not taken:
            return None
        return taken[0], taken[-1], spans, b"\n".join(self.records[seq][0] for seq in taken)

    @precondition(lambda self: self.inflight is not None)
    @rule()
    def commit(self) -> None:
        assert self.inflight is not None
        self.spool.commit(self.inflight)
        for seq in range(self.inflight.first_seq, self.inflight.last_seq + 1):
            self.records.pop(seq, None)
        self.inflight = None

    @rule(garbage=st.binary(max_size=40))
    def crash_and_reopen(self, garbage: bytes) -> None:
        """Everything acknowledged is on disk, so closing and a crash leave the same files; add a torn write."""
        self.spool.close()
        files = segments(self.path)
        if files and garbage:
            with files[-1].open("ab") as f:
                f.write(garbage)
        self.spool = self.open()

    @invariant()
    def matches_the_model(self) -> None:
        assert [(r.seq, r.payload, r.spans) for r in self.spool.pending_records()] == [
            (seq, payload, spans) for seq, (payload, spans, _) in sorted(self.records.items())
        ]
        assert self.spool.pending_bytes == sum(HEADER + len(d) + len(p) for p, _, d in self.records.values())
        assert self.spool.pending_spans == sum(n for _, n, _ in self.records.values())
        for tag in range(7):
            assert self.spool.seen(b"req-%d" % tag) == (b"req-%d" % tag in self.digests)


def test_spool_state_machine() -> None:
    run_state_machine_as_test(
        SpoolMachine, settings=settings(max_examples=60, stateful_step_count=40, deadline=None, derandomize=True)
    )


def test_every_payload_byte_survives_a_round_trip(tmp_path: Path) -> None:
    payloads = [bytes(range(256)), b"", b"\n\n", os.urandom(5000)]
    with open_spool(tmp_path) as spool:
        for payload in payloads:
            spool.append(payload, spans=1, digest=digest(payload))
    with open_spool(tmp_path) as spool:
        assert [p for _, p in pending(spool)] == payloads
        assert all(spool.seen(digest(p)) for p in payloads)
