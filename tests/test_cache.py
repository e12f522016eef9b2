"""The persistent cache: decorators, no pickle, statistics, safety under abuse."""

from __future__ import annotations

import json
import math
import os
import pickle
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core import (
    cache_features,
    cache_gate,
    cache_predictions,
    cache_regime,
    cached,
    get_cache_stats,
)
from botopt.core._cache import MISS, CacheManager, get_manager
from botopt.core._codec import Unencodable, decode, encode, fingerprint
from botopt.core._engines import Signal
from botopt.core._paths import set_current_cache_dir

runner = CliRunner()


@pytest.fixture
def root(cache_dir: Path):
    set_current_cache_dir(cache_dir)
    yield cache_dir
    set_current_cache_dir(None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.datetimes(timezones=st.just(timezone.utc)),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


def same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_codec_round_trip_keeps_types(value):
    assert same(decode(*encode(value)), value)


def test_codec_frames_arrays_and_registered_types():
    df = pl.DataFrame({"a": [1.0, None, 3.0], "t": [datetime(2026, 1, 1, tzinfo=timezone.utc)] * 3})
    assert decode(*encode(df)).equals(df)
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    back = decode(*encode({"m": arr, "x": np.float64(2.5)}))
    assert np.array_equal(back["m"], arr) and back["x"] == 2.5
    sig = Signal("X", datetime(2026, 1, 1, tzinfo=timezone.utc), "momentum", "long", 0.5, ("r",))
    assert decode(*encode([sig])) == [sig]
    with pytest.raises(Unencodable):
        encode(object())
    assert fingerprint(df) == fingerprint(df.clone())
    assert fingerprint(df) != fingerprint(df.with_columns(pl.col("a").fill_null(2.0)))


def test_decorators_cache_between_calls_and_none_is_a_hit(root):
    calls = []

    @cache_features(ttl_seconds=60)
    def compute_features(symbol: str, data: pl.DataFrame) -> dict:
        calls.append(symbol)
        return {"symbol": symbol, "mean": float(data["close"].mean())}

    @cache_predictions(ttl_seconds=30)
    def predict(features: dict) -> float | None:
        calls.append("predict")
        return None

    df = pl.DataFrame({"close": [1.0, 2.0, 3.0]})
    first = compute_features("BTCUSDT", df)
    assert compute_features("BTCUSDT", df) == first and calls == ["BTCUSDT"]
    compute_features("BTCUSDT", df.with_columns(pl.col("close") * 2))  # new data: a miss
    assert calls == ["BTCUSDT", "BTCUSDT"]
    assert predict(first) is None and predict(first) is None
    assert calls.count("predict") == 1
    get_manager(root).flush_stats()
    stats = get_cache_stats(root)
    assert stats["features"]["hits"] == 1 and stats["features"]["misses"] == 2
    assert stats["predictions"] == {**stats["predictions"], "hits": 1, "misses": 1,
                                    "hit_rate": 0.5, "entries": 1}
    assert {"regime", "gates"} <= set(stats)
    assert cache_regime and cache_gate  # all four exported


def test_ttl_expiry_with_injected_clock(cache_dir):
    now = [1000.0]
    mgr = CacheManager(root=cache_dir, clock=lambda: now[0])
    calls = []
    mgr.get_or_compute("gates", "k", lambda: calls.append(1) or "v", ttl=10)
    now[0] += 9.9
    assert mgr.get_or_compute("gates", "k", lambda: calls.append(1) or "v", ttl=10) == "v"
    now[0] += 0.2
    mgr.get_or_compute("gates", "k", lambda: calls.append(1) or "v", ttl=10)
    assert len(calls) == 2


def test_edited_function_is_a_miss(root):
    src = "def f(x):\n    return x + {k}\n"
    ns1: dict = {}
    exec(src.format(k=1), ns1)
    ns2: dict = {}
    exec(src.format(k=2), ns2)
    f1 = cached("user")(ns1["f"])
    f2 = cached("user")(ns2["f"])
    assert f1(1) == 2 and f2(1) == 3


def test_no_pickle_in_store_and_planted_pickle_never_loaded(cache_dir, tmp_path):
    mgr = CacheManager(root=cache_dir)
    mgr.set("features", "k", {"a": (1, 2)})
    db = cache_dir / "cache" / "features" / "cache.db"
    con = sqlite3.connect(db)
    modes = {r[0] for r in con.execute("SELECT mode FROM Cache")}
    assert modes <= {1, 2}  # diskcache MODE_RAW / MODE_BINARY: bytes, never MODE_PICKLE (4)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    con.execute("UPDATE Cache SET value = ?, mode = 4", (pickle.dumps(Evil()),))
    con.commit()
    con.close()
    fresh = CacheManager(root=cache_dir)
    assert fresh.get("features", "k") is MISS
    assert not marker.exists()


def test_corrupt_database_is_moved_aside(cache_dir, caplog):
    mgr = CacheManager(root=cache_dir)
    mgr.set("regime", "k", "TREND_UP")
    mgr.close()
    db = cache_dir / "cache" / "regime" / "cache.db"
    db.write_bytes(b"this is not sqlite" * 100)
    fresh = CacheManager(root=cache_dir)
    assert fresh.get_or_compute("regime", "k", lambda: "RANGE") == "RANGE"
    assert fresh.get("regime", "k") == "RANGE"
    assert list(db.parent.glob("cache.db.corrupt-*"))
    assert "damaged" in caplog.text


def test_read_only_directory_degrades_to_no_cache(cache_dir, caplog):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    os.chmod(cache_dir, 0o500)
    try:
        mgr = CacheManager(root=cache_dir / "sub")
        assert mgr.get_or_compute("features", "k", lambda: 41) == 41
    finally:
        os.chmod(cache_dir, 0o700)


def test_full_or_readonly_database_degrades(cache_dir, caplog):
    mgr = CacheManager(root=cache_dir)
    mgr.set("features", "a", 1)
    mgr.close()
    fresh = CacheManager(root=cache_dir)
    # query_only makes SQLite refuse every write the way a full or read-only disk does
    # (root ignores file modes, so chmod cannot simulate it here).
    fresh._cache("features")._sql("PRAGMA query_only = ON")
    assert fresh.get_or_compute("features", "b", lambda: 2) == 2
    assert fresh.get_or_compute("features", "c", lambda: 3) == 3
    assert "caching disabled" in caplog.text
    assert fresh.get_or_compute("features", "a", lambda: -1) == -1  # degraded: computes


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_unsafe_cache_dir_refused(tmp_path, mode):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, mode)
    result = runner.invoke(app, ["--cache-dir", str(d), "signals", "-s", "BTCUSDT",
                                 "--as-of", "2026-09-20"])
    assert result.exit_code == 2
    assert "writable by other users" in result.stderr and str(d) in result.stderr


def test_foreign_owned_cache_dir_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 12345, 12345)
    result = runner.invoke(app, ["--cache-dir", str(d), "signals", "-s", "BTCUSDT",
                                 "--as-of", "2026-09-20"])
    assert result.exit_code == 2 and "owned by uid 12345" in result.stderr


def test_new_cache_dir_is_private(tmp_path):
    d = tmp_path / "fresh"
    result = runner.invoke(app, ["--cache-dir", str(d), "signals", "-s", "BTCUSDT",
                                 "--as-of", "2026-09-20"])
    assert result.exit_code == 0, result.stderr
    assert (d.stat().st_mode & 0o777) == 0o700


WORKER = r"""
import sys, time
from pathlib import Path
from botopt.core._cache import CacheManager
mgr = CacheManager(root=Path(sys.argv[1]))
n = int(sys.argv[2])
for i in range(200):
    key = f"k{i % 20}"
    v = mgr.get_or_compute("features", key, lambda: {"key": key, "payload": list(range(50))})
    assert v == {"key": key, "payload": list(range(50))}, v
mgr.close()
print("ok")
"""


def test_many_processes_at_once(cache_dir):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(cache_dir), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
        assert "locked" not in err and "Timeout" not in err
    stats = get_cache_stats(cache_dir)["features"]
    assert stats["hits"] + stats["misses"] == 1200 and stats["entries"] == 20


def test_cache_stats_cli_json_and_light_imports(tmp_path):
    c = tmp_path / "c"
    assert runner.invoke(app, ["--cache-dir", str(c), "signals", "-s", "BTCUSDT,ETHUSDT",
                               "--as-of", "2026-09-20"]).exit_code == 0
    result = runner.invoke(app, ["--cache-dir", str(c), "cache-stats", "--json"])
    assert result.exit_code == 0, result.stderr
    caches = json.loads(result.stdout)["caches"]
    for name in ("features", "predictions", "regime", "gates"):
        assert {"hits", "misses", "hit_rate", "entries", "ttl_seconds", "size_bytes",
                "time_saved_seconds"} <= set(caches[name])
    assert caches["features"]["misses"] == 2 and caches["features"]["ttl_seconds"] == 60
    code = ("import sys\nfrom botopt.cli.main import app\n"
            "try:\n    app(['--cache-dir', sys.argv[1], 'cache-stats'])\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('polars', 'numpy', 'pandas', 'pyarrow') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code, str(c)], capture_output=True, text=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    plain = runner.invoke(app, ["--cache-dir", str(c), "cache-stats"])
    assert plain.exit_code == 0 and "features" in plain.stdout


def test_cache_clear(tmp_path):
    c = tmp_path / "c"
    runner.invoke(app, ["--cache-dir", str(c), "signals", "-s", "BTCUSDT", "--as-of",
                        "2026-09-20"])
    assert runner.invoke(app, ["--cache-dir", str(c), "cache-clear", "--cache", "features"]
                         ).exit_code == 0
    stats = json.loads(runner.invoke(app, ["--cache-dir", str(c), "cache-stats", "--json"]
                                     ).stdout)["caches"]
    assert stats["features"]["entries"] == 0 and stats["features"]["misses"] == 0
    assert stats["regime"]["entries"] == 1
    bad = runner.invoke(app, ["--cache-dir", str(c), "cache-clear", "--cache", "featurez"])
    assert bad.exit_code == 2 and "unknown cache 'featurez'" in bad.stderr
    assert runner.invoke(app, ["--cache-dir", str(c), "cache-clear"]).exit_code == 0
