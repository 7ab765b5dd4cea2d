"""Bounded decompression of request bodies: any number of gzip or deflate members, one output limit.

HTTP bodies may be compressed in layers (``Content-Encoding: gzip, deflate``) and a gzip body may
hold many concatenated members. An attacker controls all of it, so the inflater bounds three
things whatever the input: the bytes it produces across all members and layers (``limit``; a
gzip bomb stops one chunk past it), the wall time it spends (``deadline``), and the number of
layers. Each step produces at most one chunk, so no single call runs long.

CPython's ``zlib`` keeps the input that follows a member in both ``unused_data`` and
``unconsumed_tail`` when the member ends in the same call that fills ``max_length``; reading the
tail again after ``eof`` makes no progress and loops forever. The loop here therefore stops
feeding a member as soon as it reports ``eof`` and continues with ``unused_data`` alone.
"""

from __future__ import annotations

import time
import zlib
from typing import Final

CHUNK_BYTES: Final = 1 << 20
MAX_LAYERS: Final = 2
"""Stacked encodings accepted in one Content-Encoding header (``gzip, gzip, gzip`` is refused)."""

_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_ZLIB_WBITS: Final = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS: Final = -zlib.MAX_WBITS
_IDENTITY: Final = frozenset({"", "identity"})


class PayloadTooLarge(Exception):
    """The body, before or after decompression, exceeds ``max_body_bytes``."""


class BadEncoding(Exception):
    """A Content-Encoding the receiver does not speak."""


class InvalidCompressedBody(ValueError):
    """The body is not valid for its Content-Encoding (corrupt, truncated, or trailing garbage)."""


class DecodeTimeout(Exception):
    """Decompressing the body took longer than the per-request time limit."""


def encodings(header: str | None) -> list[str]:
    """The Content-Encoding header as the list of codings to undo, innermost last (RFC 9110 §8.4)."""
    names = [part.strip().lower() for part in (header or "").split(",")]
    layers = [name for name in names if name not in _IDENTITY]
    for name in layers:
        if name not in {"gzip", "x-gzip", "deflate"}:
            raise BadEncoding(f"unsupported Content-Encoding {header!r} (use gzip, deflate or identity)")
    if len(layers) > MAX_LAYERS:
        raise BadEncoding(f"Content-Encoding {header!r} stacks more than {MAX_LAYERS} compressions")
    return layers


def decompress(body: bytes, encoding: str | None, limit: int, *, deadline: float | None = None) -> bytes:
    """Undo ``encoding`` on ``body``; the result never exceeds ``limit`` bytes.

    ``deadline`` is a ``time.monotonic()`` value; past it :class:`DecodeTimeout` is raised.
    An identity body longer than ``limit`` raises :class:`PayloadTooLarge` as well.
    """
    layers = encodings(encoding)
    if not layers and len(body) > limit:
        raise PayloadTooLarge(f"body of {len(body)} bytes exceeds the {limit}-byte limit")
    data = body
    for name in reversed(layers):  # the last coding listed was applied last, so it comes off first
        data = _inflate_members(data, name, limit, deadline)
    return data


def _inflate_members(data: bytes, name: str, limit: int, deadline: float | None) -> bytes:
    """Inflate every member of ``data``; trailing bytes that start no valid member are an error."""
    if not data:
        raise InvalidCompressedBody(f"empty {name} body")
    out = bytearray()
    rest = data
    while rest:
        wbits = _GZIP_WBITS if name != "deflate" else _deflate_wbits(rest)
        rest = _inflate_one(zlib.decompressobj(wbits), rest, out, name=name, limit=limit, deadline=deadline)
    return bytes(out)


def _deflate_wbits(data: bytes) -> int:
    """HTTP ``deflate`` means zlib-wrapped (RFC 9110), but some clients send raw deflate: accept both."""
    if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        return _ZLIB_WBITS
    return _RAW_DEFLATE_WBITS


def _inflate_one(
    inflater: zlib._Decompress, data: bytes, out: bytearray, *, name: str, limit: int, deadline: float | None
) -> bytes:
    """Inflate one member into ``out``; returns the bytes after it (the next member, if any)."""
    pending = data
    try:
        while True:  # until the member ends (eof); mypy would narrow a `while not inflater.eof` for good
            room = limit - len(out) + 1  # one byte past the limit proves the body is too large
            chunk = inflater.decompress(pending, min(CHUNK_BYTES, room))
            out += chunk
            if len(out) > limit:
                raise PayloadTooLarge(f"body exceeds the {limit}-byte limit after decompression")
            if deadline is not None and time.monotonic() > deadline:
                raise DecodeTimeout("decompressing the body took too long")
            if inflater.eof:
                break
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                raise InvalidCompressedBody(f"truncated {name} body")
    except zlib.error as exc:
        raise InvalidCompressedBody(f"body is not valid {name}: {exc}") from None
    return inflater.unused_data
