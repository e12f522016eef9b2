"""The byte format of one cache entry, shared by the local store (``_cache``) and the shared
server's (``_redis_store``): magic, expire-at (the manager's clock), compute seconds, then the
codec's bytes. The magic makes a zeroed or foreign value read as damaged rather than expired."""

from __future__ import annotations

import struct

HEADER = struct.Struct("<2sdd")
MAGIC = b"b1"
