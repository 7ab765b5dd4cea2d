"""Bounded decompression: every body ends in bytes or one known refusal, fast and within the limit.

The regression this guards: two gzip members of 2 MiB of zeros each (4,134 bytes on the wire) sent
the old inflater into an endless loop, because CPython leaves the next member in
``unconsumed_tail`` of a finished decompressor when the member ends exactly at ``max_length``.
"""

from __future__ import annotations

import gzip
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwatch.collectors.ingest.inflate import (
    CHUNK_BYTES,
    BadEncoding,
    DecodeTimeout,
    InvalidCompressedBody,
    PayloadTooLarge,
    decompress,
)

MiB = 1 << 20
REFUSALS = (PayloadTooLarge, BadEncoding, InvalidCompressedBody, DecodeTimeout)


def within(seconds: float, work: Callable[[], object]) -> object:
    """Run ``work`` in a thread; fail (instead of hanging the suite) when it does not end in time."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"decompression did not finish within {seconds} s"
    return outcome[0]


def zlib_member(data: bytes) -> bytes:
    return zlib.compress(data)


def raw_deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


def test_two_members_ending_on_a_chunk_boundary_are_inflated() -> None:
    member = gzip.compress(bytes(2 * MiB))
    body = member * 2
    assert len(body) == 4134  # the request from the report, byte for byte
    result = within(5, lambda: decompress(body, "gzip", 64 * MiB))
    assert result == bytes(4 * MiB)


def test_many_members_count_towards_one_limit() -> None:
    body = gzip.compress(bytes(CHUNK_BYTES)) * 50  # 50 MiB in 50 members
    result = within(5, lambda: decompress(body, "gzip", 8 * MiB))
    assert isinstance(result, PayloadTooLarge)


@pytest.mark.parametrize("encoding", ["deflate", "DEFLATE", " deflate "])
@pytest.mark.parametrize("wrap", [zlib_member, raw_deflate], ids=["zlib", "raw"])
def test_deflate_members_zlib_wrapped_or_raw(encoding: str, wrap: Callable[[bytes], bytes]) -> None:
    body = wrap(bytes(CHUNK_BYTES)) + wrap(b"tail")
    assert decompress(body, encoding, 4 * MiB) == bytes(CHUNK_BYTES) + b"tail"


def test_stacked_encodings_come_off_in_reverse_order() -> None:
    body = zlib_member(gzip.compress(b"payload"))  # gzip first, then deflate
    assert decompress(body, "gzip, deflate", MiB) == b"payload"
    with pytest.raises(InvalidCompressedBody):
        decompress(body, "deflate, gzip", MiB)


def test_more_than_two_layers_and_unknown_codings_are_refused() -> None:
    with pytest.raises(BadEncoding):
        decompress(gzip.compress(b"x"), "gzip, gzip, gzip", MiB)
    with pytest.raises(BadEncoding):
        decompress(b"x", "br", MiB)


def test_identity_over_the_limit_and_garbage_after_a_member() -> None:
    with pytest.raises(PayloadTooLarge):
        decompress(bytes(11), "identity", 10)
    assert decompress(b"plain", None, 10) == b"plain"
    with pytest.raises(InvalidCompressedBody):
        decompress(gzip.compress(b"ok") + b"garbage", "gzip", MiB)
    with pytest.raises(InvalidCompressedBody):
        decompress(gzip.compress(b"ok" * 1000)[:-9], "gzip", MiB)  # truncated trailer
    with pytest.raises(InvalidCompressedBody):
        decompress(b"", "gzip", MiB)


def test_deadline_stops_a_slow_body() -> None:
    body = gzip.compress(bytes(32 * MiB))
    with pytest.raises(DecodeTimeout):
        decompress(body, "gzip", 64 * MiB, deadline=time.monotonic() - 1)


def test_a_bomb_never_holds_much_more_than_the_limit() -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(4 * MiB)
    bomb = b"".join(deflater.compress(zeros) for _ in range(64)) + deflater.flush()  # 256 MiB
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            decompress(bomb, "gzip", 4 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB + 3 * CHUNK_BYTES, f"peak {peak / MiB:.1f} MiB"


# --- property: any mix of members, sizes, truncation, garbage and encodings ------------------------

_WRAPPERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zlib": zlib_member,
    "raw": raw_deflate,
}
_HEADER_FOR = {"gzip": "gzip", "zlib": "deflate", "raw": "deflate"}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, bytes | None, int]:
    """A body, its Content-Encoding, the bytes it must inflate to (None: it must be refused), the limit."""
    kind = draw(st.sampled_from(sorted(_WRAPPERS)))
    header = _HEADER_FOR[kind]
    sizes = draw(
        st.lists(
            st.sampled_from([0, 1, 100, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * MiB]), min_size=1, max_size=5
        )
    )
    members = [bytes([index % 251]) * size for index, size in enumerate(sizes)]
    if kind == "raw":
        members = members[:1]  # raw deflate has no header: a second member is indistinguishable from garbage
    body = b"".join(_WRAPPERS[kind](member) for member in members)
    expected: bytes | None = b"".join(members)
    damage = draw(st.sampled_from(["none", "truncate", "garbage", "mislabel", "layered"]))
    if damage == "truncate":
        body = body[: draw(st.integers(0, len(body) - 1))]
        expected = None
    elif damage == "garbage":
        body += draw(st.binary(min_size=1, max_size=64))
        expected = None
    elif damage == "mislabel":
        header = "gzip" if header == "deflate" else "deflate"
        expected = None
    limit = draw(st.sampled_from([1, 4096, 2 * MiB, 16 * MiB]))
    if damage == "layered":
        if len(body) > limit:  # every layer's output counts against the limit, the middle one too
            expected = None
        body = gzip.compress(body)
        header = f"{header}, gzip"
    if expected is not None and len(expected) > limit:
        expected = None
    return body, header, expected, limit


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=bodies())
def test_any_body_inflates_exactly_or_is_refused_fast(case: tuple[bytes, str, bytes | None, int]) -> None:
    body, header, expected, limit = case
    started = time.monotonic()
    try:
        result: bytes | None = decompress(body, header, limit, deadline=started + 5)
    except REFUSALS:
        result = None
    assert time.monotonic() - started < 5
    if expected is not None:
        assert result == expected
    elif result is not None:
        # garbage can happen to be a valid empty member, and a random cut can land on a member
        # boundary: whatever it inflates to, it stays within the limit
        assert len(result) <= limit
