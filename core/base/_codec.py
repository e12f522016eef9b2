"""Typed JSON and Arrow IPC encoding for cached values, and content fingerprints for keys.

No pickle anywhere: a value decodes only into plain data, numpy arrays, polars frames, or a
class registered here (``register_type``) that rebuilds itself with ``from_dict``. Round trips
preserve types (a tuple stays a tuple, an int stays an int, NaN stays NaN), so a cached answer
is equal to the uncached one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import math
from datetime import date, datetime
from typing import Any

TAG_JSON = b"J"
TAG_ARROW = b"A"
_registry: dict[str, type] = {}
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one, not one per value
_PLAIN = (str, int, bool, type(None))  # exact types that encode as themselves


def json_loads(data: str | bytes | bytearray | memoryview) -> Any:
    """``json.loads``, with nesting too deep for the parser as one more ``ValueError``.

    Python's parser recurses per level and raises ``RecursionError`` (not a ValueError) at
    about a thousand: a state, cache or user file of 100,000 ``[`` must read as damaged or
    malformed, as any other bad JSON does, not end the run in an internal error."""
    try:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def finite(value: Any) -> Any:
    """``value`` with every float that JSON cannot spell (NaN, Infinity) as its text ("nan",
    "inf", "-inf"), in dicts and lists at any depth. Python's json writes them as bare
    ``NaN`` tokens that strict readers (and botopt's own notification queue) refuse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class Unencodable(TypeError):
    """The value (or argument) has a type botopt will not store without pickle."""


def register_type(cls: type) -> type:
    """Allow instances of ``cls`` (with ``to_dict`` / ``from_dict``) in cached values."""
    if not (hasattr(cls, "to_dict") and hasattr(cls, "from_dict")):
        raise TypeError(f"{cls.__qualname__} needs to_dict() and from_dict()")
    _registry[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def _ipc(frame: Any) -> bytes:
    buf = io.BytesIO()
    frame.write_ipc(buf)
    return buf.getvalue()


def _to_json(v: Any) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if type(v).__module__ == "numpy":  # np.float64 is a float: kept a numpy scalar
        import numpy as np

        if isinstance(v, np.generic):
            item = v.item()
            if type(item) is type(v):  # no Python equivalent (long double): not stored
                raise Unencodable(f"numpy {v.dtype} scalar")
            return {"$np": str(v.dtype), "v": _to_json(item)}
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"$f": repr(v)}
    if isinstance(v, list):
        # Finite floats pass as they are: rows of numbers are most of what is cached.
        return [x if type(x) is float and math.isfinite(x) else _to_json(x) for x in v]
    if isinstance(v, tuple):
        return {"$tuple": [_to_json(x) for x in v]}
    if isinstance(v, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in v):
            # Plain values pass as they are (no call each): a run's answer is 2,000 dicts.
            return {k: x if type(x) in _PLAIN or (type(x) is float and math.isfinite(x))
                    else _to_json(x) for k, x in v.items()}
        return {"$dict": [[_to_json(k), _to_json(x)] for k, x in v.items()]}
    if isinstance(v, datetime):
        return {"$dt": v.isoformat(), "tz": str(v.tzinfo) if v.tzinfo else None}
    if isinstance(v, date):
        return {"$date": v.isoformat()}
    mod = type(v).__module__.split(".")[0]
    if mod == "numpy":
        import numpy as np

        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "biufcmM":
                raise Unencodable(f"numpy array of dtype {v.dtype}")
            return {"$nd": str(v.dtype), "shape": list(v.shape),
                    "b64": base64.b64encode(np.ascontiguousarray(v).tobytes()).decode()}
        if isinstance(v, np.generic):
            return {"$np": str(v.dtype), "v": _to_json(v.item())}
    if mod == "polars":
        import polars as pl

        if isinstance(v, pl.DataFrame):
            return {"$df": base64.b64encode(_ipc(v)).decode()}
        if isinstance(v, pl.Series):
            return {"$series": base64.b64encode(_ipc(v.to_frame())).decode()}
    key = f"{type(v).__module__}.{type(v).__qualname__}"
    if key in _registry:
        return {"$obj": key, "v": _to_json(v.to_dict())}
    raise Unencodable(f"type {key}")


def _from_json(v: Any) -> Any:
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "$f" in v:
        return float(v["$f"])
    if "$tuple" in v:
        return tuple(_from_json(x) for x in v["$tuple"])
    if "$dict" in v:
        return {_from_json(k): _from_json(x) for k, x in v["$dict"]}
    if "$dt" in v:
        dt = datetime.fromisoformat(v["$dt"])
        if v.get("tz") and dt.tzinfo is not None and v["tz"] != str(dt.tzinfo):
            from zoneinfo import ZoneInfo

            dt = dt.astimezone(ZoneInfo(v["tz"]))
        return dt
    if "$date" in v:
        return date.fromisoformat(v["$date"])
    if "$nd" in v:
        import numpy as np

        raw = base64.b64decode(v["b64"])
        return np.frombuffer(raw, dtype=np.dtype(v["$nd"])).reshape(v["shape"]).copy()
    if "$np" in v:
        import numpy as np

        return np.dtype(v["$np"]).type(_from_json(v["v"]))
    if "$df" in v:
        import polars as pl

        return pl.read_ipc(io.BytesIO(base64.b64decode(v["$df"])))
    if "$series" in v:
        import polars as pl

        return pl.read_ipc(io.BytesIO(base64.b64decode(v["$series"]))).to_series()
    if "$obj" in v:
        cls = _registry.get(v["$obj"])
        if cls is None:
            raise ValueError(f"unregistered type {v['$obj']} in cache")
        return cls.from_dict(_from_json(v["v"]))  # type: ignore[attr-defined]
    return {k: _from_json(x) for k, x in v.items()}


def encode(value: Any) -> tuple[bytes, bytes]:
    """(tag, body) for a value; raises Unencodable for types that would need pickle, and
    for values JSON cannot hold (an integer of 5,000 digits, a list that contains itself,
    nesting too deep for the parser to read back)."""
    if type(value).__module__.split(".")[0] == "polars":
        import polars as pl

        if isinstance(value, pl.DataFrame):
            return TAG_ARROW, _ipc(value)
    try:
        return TAG_JSON, _ENCODER.encode(_to_json(value)).encode()
    except (ValueError, RecursionError, OverflowError) as exc:
        raise Unencodable(f"{type(exc).__name__}: {str(exc)[:80]}") from None


def decode(tag: bytes, body: bytes) -> Any:
    if tag == TAG_ARROW:
        import polars as pl

        return pl.read_ipc(io.BytesIO(body))
    if tag == TAG_JSON:
        return _from_json(json.loads(body))
    raise ValueError(f"unknown cache entry tag {tag!r}")


def _feed(h: Any, v: Any) -> None:
    mod = type(v).__module__.split(".")[0]
    if mod == "polars":
        import polars as pl

        if isinstance(v, (pl.DataFrame, pl.Series)):
            series = isinstance(v, pl.Series)
            frame: pl.DataFrame = v.to_frame() if isinstance(v, pl.Series) else v
            h.update(f"{'series' if series else 'df'}:{pl.__version__}:{frame.schema}:"
                     f"{frame.height}".encode())
            if frame.height and frame.width:
                h.update(frame.hash_rows(seed=0).to_numpy().tobytes())
                # hash_rows hashes -0.0 as 0.0 (1 / x tells them apart): where a float
                # column holds a negative zero is hashed too (none, nearly always)
                floats = [c for c, t in frame.schema.items() if t in (pl.Float64,
                                                                       pl.Float32)]
                if floats:
                    neg = frame.select(pl.concat_list(
                        pl.arg_where((pl.col(c) == 0) & (1 / pl.col(c) < 0)).implode()
                        for c in floats))
                    h.update(b"negzero:" + repr(neg.row(0)).encode())
            return
    if mod == "numpy":
        import numpy as np

        if isinstance(v, np.ndarray):
            h.update(f"nd:{v.dtype}:{v.shape}".encode())
            if v.dtype.hasobject:  # its bytes are addresses: the objects, by content
                _feed(h, v.tolist())
            else:
                h.update(np.ascontiguousarray(v).tobytes())
            return
    own = getattr(type(v), "__fingerprint__", None)
    if own is not None:  # a value that is computed on demand names its data itself
        h.update(b"fp:" + own(v))
        return
    if isinstance(v, (list, tuple)):
        h.update(b"[" if isinstance(v, list) else b"(")
        for x in v:
            _feed(h, x)
            h.update(b",")
        h.update(b"]")
        return
    if isinstance(v, dict):
        h.update(b"{")
        for k in sorted(v, key=repr):
            _feed(h, k)
            h.update(b":")
            _feed(h, v[k])
        h.update(b"}")
        return
    h.update(json.dumps(_to_json(v), sort_keys=True).encode())


def fingerprint(value: Any) -> str:
    """A content hash of ``value`` (frames and arrays by their data). Unencodable for what
    has no content hash here (objects, a list that contains itself, an integer too long
    for JSON)."""
    h = hashlib.blake2b(digest_size=20)
    try:
        _feed(h, value)
    except (ValueError, RecursionError, OverflowError) as exc:
        raise Unencodable(f"{type(exc).__name__}: {str(exc)[:80]}") from None
    return h.hexdigest()


def digest(*parts: str) -> str:
    """A cache key from string parts; a NUL between parts, so no two part lists collide."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=20).hexdigest()


def settings_json(*sections: Any) -> str:
    """Settings sections (frozen dataclasses) as canonical JSON: the settings part of a key."""
    return json.dumps([dataclasses.asdict(s) for s in sections], sort_keys=True, default=str)
