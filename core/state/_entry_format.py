"""The byte format of one cache entry, shared by the local store (``_cache``) and the shared
server's (``_redis_store``): magic, expire-at (the manager's clock), compute seconds, then the
codec's bytes. The magic makes a zeroed or foreign value read as damaged rather than expired.

The local store deflates values of ``DEFLATE_FROM`` bytes and more (magic ``MAGIC_Z``): a
run's whole-run entries (``signals``, ``gates``) are JSON of every symbol, 3.2 MB and 1.1 MB
a run at 10,000 symbols, which deflate to about 15 % and 4 %, and SQLite writes every byte
twice (its WAL, then the checkpoint). Values from ``SMALL_FROM`` bytes (a symbol's feature
row, about 490 bytes of JSON, 10,000 of them a run) are deflated against a preset
dictionary of what such a row looks like, with a 1 KiB window (magic ``MAGIC_D``): about
40 % of their size at about 11 us each, where plain zlib gains little on a few hundred
bytes. Anything that would not shrink is stored as it is."""

from __future__ import annotations

import struct
import zlib

HEADER = struct.Struct("<2sdd")
MAGIC = b"b1"
MAGIC_Z = b"z1"  # the codec's bytes, deflated (zlib)
MAGIC_D = b"d1"  # the codec's bytes, raw deflate (1 KiB window) against ZDICT
DEFLATE_FROM = 4096
SMALL_FROM = 160
# What a cached feature row looks like (the codec's JSON of the pipeline's last row): the
# repeated part of every such value. Changing it needs a new magic (old entries name theirs).
ZDICT = (b'J{"c":"open,high,low,close,volume,ema_12,ema_26,rsi_14,atr_14,adx_14,plus_di_14,'
         b'minus_di_14,bb_width_20,vol_20,volume_z_20,log_return","t":1767585300000,"v":['
         b'0.0012345678901234567,1.1274046037159366,599.5074132501364,52.75691757225222,'
         b'0.017290490710700164,15.118602240643423,-0.0005,null]}')
_WBITS = -10  # raw deflate, 1 KiB window: a small value needs no more, and sets up faster


def pack(expire_at: float, seconds: float, value: bytes) -> bytes:
    """One stored value: the header, then ``value``, deflated when large enough."""
    if len(value) >= DEFLATE_FROM:
        return HEADER.pack(MAGIC_Z, expire_at, seconds) + zlib.compress(value, 1)
    if len(value) >= SMALL_FROM:
        z = zlib.compressobj(1, zlib.DEFLATED, _WBITS, 2, zlib.Z_DEFAULT_STRATEGY, ZDICT)
        body = z.compress(value) + z.flush()
        if len(body) < len(value):
            return HEADER.pack(MAGIC_D, expire_at, seconds) + body
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
    if magic == MAGIC_D:
        z = zlib.decompressobj(_WBITS, zdict=ZDICT)
        try:
            out = z.decompress(body[HEADER.size:])
        except zlib.error as exc:
            raise ValueError("a damaged deflated value") from exc
        if not z.eof or z.unused_data:  # raw deflate has no checksum: a cut stream shows here
            raise ValueError("a damaged deflated value")
        return expire_at, seconds, out
    raise ValueError("no botopt header")
