"""The byte format of one cache entry, shared by the local store (``_cache``) and the shared
server's (``_redis_store``): magic, expire-at (the manager's clock), compute seconds, then the
codec's bytes. The magic makes a zeroed or foreign value read as damaged rather than expired.

The local store deflates values of ``DEFLATE_FROM`` bytes and more (magic ``MAGIC_Z``): a
run's whole-run entries (``signals``, ``gates``) are JSON of every symbol, 3.2 MB and 1.1 MB
a run at 10,000 symbols, which deflate to about 15 % and 4 %, and SQLite writes every byte
twice (its WAL, then the checkpoint). Small per-symbol values stay as they are: zlib's
per-call set-up costs more than it saves on a few hundred bytes."""

from __future__ import annotations

import struct
import zlib

HEADER = struct.Struct("<2sdd")
MAGIC = b"b1"
MAGIC_Z = b"z1"  # the codec's bytes, deflated (zlib)
DEFLATE_FROM = 4096


def pack(expire_at: float, seconds: float, value: bytes) -> bytes:
    """One stored value: the header, then ``value``, deflated when large enough."""
    if len(value) >= DEFLATE_FROM:
        return HEADER.pack(MAGIC_Z, expire_at, seconds) + zlib.compress(value, 1)
    return HEADER.pack(MAGIC, expire_at, seconds) + value


def unpack(body: bytes) -> tuple[float, float, bytes]:
    """(expire-at, seconds, the codec's bytes) of a stored value; ValueError for one botopt
    did not write (no header, a foreign magic, a cut deflated stream)."""
    try:
        magic, expire_at, seconds = HEADER.unpack_from(body)
    except struct.error as exc:
        raise ValueError("no botopt header") from exc
    if magic == MAGIC:
        return expire_at, seconds, body[HEADER.size:]
    if magic == MAGIC_Z:
        try:
            return expire_at, seconds, zlib.decompress(body[HEADER.size:])
        except zlib.error as exc:
            raise ValueError("a damaged deflated value") from exc
    raise ValueError("no botopt header")
