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
    cache_predictions,
    cached,
    get_cache_stats,
    load_config,
)
from botopt.core.base._codec import Unencodable, decode, encode, fingerprint
from botopt.core.errors import UsageError
from botopt.core.signals._engines import Signal
from botopt.core.state._cache import _HEADER, MISS, CacheManager, get_manager
from botopt.core.state._workspace import set_default_root

KEY_K = "features\x1fk"  # how the store keys entry "k" of cache "features"

runner = CliRunner()


@pytest.fixture
def root(cache_dir: Path):
    set_default_root(cache_dir)
    yield cache_dir
    set_default_root(None)


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


# Module level, not captured: a closure's values are part of a decorated function's key,
# and a list a closure appends to would make every call a miss.
_CALLS: list[str] = []


def test_decorators_cache_between_calls_and_none_is_a_hit(root):
    calls = _CALLS
    calls.clear()

    @cache_features(ttl_seconds=60)
    def compute_features(symbol: str, data: pl.DataFrame) -> dict:
        _CALLS.append(symbol)
        return {"symbol": symbol, "mean": float(data["close"].mean())}

    @cache_predictions(ttl_seconds=30)
    def predict(features: dict) -> float | None:
        _CALLS.append("predict")
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
    import botopt.core

    # the decorators a bot's own code wraps its stages with are public API
    assert {"cached", "cache_features", "cache_predictions", "cache_regime",
            "cache_gate"} <= set(botopt.core.__all__)


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


def _db(root: Path) -> sqlite3.Connection:
    """diskcache's database (table Cache); entries are the rows with a tag (the cache's
    name), statistics the rows without."""
    return sqlite3.connect(root / "cache" / "entries" / "cache.db", isolation_level=None)


def test_no_pickle_in_store_and_planted_pickle_never_loaded(cache_dir, tmp_path, caplog):
    mgr = CacheManager(root=cache_dir)
    mgr.set("features", "k", {"a": (1, 2)})
    con = _db(cache_dir)
    tags = {bytes(r[0][_HEADER.size:][:1]) for r in
            con.execute("SELECT value FROM Cache WHERE tag IS NOT NULL")}
    assert tags == {b"J"}  # typed JSON (or Arrow "A"): never a pickle
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    con.execute("UPDATE Cache SET value = ? WHERE tag IS NOT NULL", (pickle.dumps(Evil()),))
    con.close()
    fresh = CacheManager(root=cache_dir)
    assert fresh.get("features", "k") is MISS
    assert not marker.exists()
    assert "damaged entry was dropped" in caplog.text
    assert _db(cache_dir).execute("SELECT COUNT(*) FROM Cache WHERE tag IS NOT NULL"
                                  ).fetchone()[0] == 0


def test_pickle_planted_with_diskcache_default_disk_is_never_loaded(cache_dir, tmp_path,
                                                                   caplog):
    """Whoever can write the directory plants entries with diskcache's own (pickling) Disk,
    under the keys botopt reads: each is a miss deleted with a warning, never unpickled,
    and a planted statistics row is ignored, not loaded."""
    import diskcache

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    mgr = CacheManager(root=cache_dir)
    mgr.set("features", "k", 1)  # creates the directory and database
    mgr.close()
    evil = diskcache.Cache(str(cache_dir / "cache" / "entries"))  # the default Disk
    evil.set(KEY_K, Evil(), tag="features")  # a small pickle, inside the database
    evil.set("features\x1fbig", [Evil(), "x" * 100_000], tag="features")  # a pickle file
    evil.set("\x1fstats\x1ffeatures", Evil())
    evil.set(("features", "k"), Evil())  # a pickled key: never matches a botopt key
    evil.close()
    fresh = CacheManager(root=cache_dir)
    assert fresh.get_many("features", ["k", "big"]) == {}
    assert caplog.text.count("damaged entry was dropped") == 2
    assert not marker.exists()
    con = _db(cache_dir)
    assert con.execute("SELECT COUNT(*) FROM Cache WHERE key IN (?, ?)",
                       (KEY_K, "features\x1fbig")).fetchone()[0] == 0
    fresh.count("features", hits=1)
    fresh.flush_stats()  # overwrites the planted statistics instead of loading them
    assert get_cache_stats(cache_dir)["features"]["hits"] == 1
    assert not marker.exists()
    assert fresh.get_or_compute("features", "k", lambda: 5) == 5
    assert CacheManager(root=cache_dir).get("features", "k") == 5


def test_locked_cache_is_a_miss_not_a_failure(cache_dir, caplog):
    """Another process holding diskcache's write lock: the write is skipped (diskcache's
    Timeout read as busy), never a warning or caching turned off; later writes land."""
    mgr = CacheManager(root=cache_dir)
    mgr.set("features", "a", 1)
    other = _db(cache_dir)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert mgr.get_or_compute("features", "b", lambda: 2) == 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "WARNING" not in caplog.text and not mgr._broken
    assert mgr.get("features", "a") == 1 and mgr.get("features", "b") is MISS
    assert mgr.set("features", "b", 2) and mgr.get("features", "b") == 2


# 5: stored as is; 60: deflated against the preset dictionary; 5000: deflated (4 KiB and more)
@pytest.mark.parametrize("size", [5, 60, 5000])
@pytest.mark.parametrize("damage", ["zeroed", "truncated"])
def test_corrupt_value_is_a_miss_deleted_with_a_warning(cache_dir, caplog, damage, size):
    mgr = CacheManager(root=cache_dir)
    mgr.set("features", "k", {"rows": list(range(size))})
    mgr.set("features", "other", 7)
    mgr.close()
    con = _db(cache_dir)
    (raw,) = con.execute("SELECT value FROM Cache WHERE key = ?", (KEY_K,)).fetchone()
    bad = bytes(len(raw)) if damage == "zeroed" else raw[: len(raw) // 2]
    con.execute("UPDATE Cache SET value = ? WHERE key = ?", (bad, KEY_K))
    con.close()
    fresh = CacheManager(root=cache_dir)
    assert fresh.get_or_compute("features", "k", lambda: "recomputed") == "recomputed"
    assert caplog.text.count("damaged entry was dropped") == 1
    assert fresh.get("features", "k") == "recomputed" and fresh.get("features", "other") == 7


def test_corrupt_database_is_moved_aside_once(cache_dir, caplog):
    db = cache_dir / "cache" / "entries" / "cache.db"
    for _ in range(3):
        mgr = CacheManager(root=cache_dir)
        mgr.set("regime", "k", "TREND_UP")
        mgr.close()
        db.write_bytes(b"this is not sqlite" * 100)
        fresh = CacheManager(root=cache_dir)
        assert fresh.get_or_compute("regime", "k", lambda: "RANGE") == "RANGE"
        assert fresh.get("regime", "k") == "RANGE"
        fresh.close()
    assert "damaged" in caplog.text
    assert sorted(p.name for p in db.parent.glob("cache.db.corrupt*")) == ["cache.db.corrupt"]


def test_read_only_directory_degrades_to_no_cache(cache_dir, caplog):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    os.chmod(cache_dir, 0o500)
    try:
        mgr = CacheManager(root=cache_dir / "sub")
        assert mgr.get_or_compute("features", "k", lambda: 41) == 41
    finally:
        os.chmod(cache_dir, 0o700)


def test_read_only_database_degrades(cache_dir, caplog):
    mgr = CacheManager(root=cache_dir)
    mgr.set("features", "a", 1)
    mgr.close()
    fresh = CacheManager(root=cache_dir)
    # query_only makes SQLite refuse every write the way a read-only disk does
    # (root ignores file modes, so chmod cannot simulate it here).
    fresh._backend()._conn().execute("PRAGMA query_only = ON")
    assert fresh.get_or_compute("features", "b", lambda: 2) == 2
    assert fresh.get_or_compute("features", "c", lambda: 3) == 3
    assert caplog.text.count("caching disabled") == 1
    assert fresh.get_or_compute("features", "a", lambda: -1) == -1  # degraded: computes
    assert not list((cache_dir / "cache").glob("*.corrupt*"))


def test_full_database_degrades_and_is_never_moved_aside(cache_dir, caplog):
    mgr = CacheManager(root=cache_dir)
    mgr.set("features", "a", 1)
    con = mgr._backend()._conn()
    # The database may not grow: SQLite answers SQLITE_FULL, as on a full disk.
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.execute(f"PRAGMA max_page_count = {pages}")
    with mgr.batch():
        mgr.set_many("features", {f"k{i}": "x" * 5000 for i in range(50)})
    assert "caching disabled" in caplog.text and "full" in caplog.text
    assert mgr.get_or_compute("features", "b", lambda: 2) == 2
    mgr.close()
    assert not list((cache_dir / "cache").glob("*.corrupt*"))
    assert CacheManager(root=cache_dir).get("features", "a") == 1  # still healthy


def test_one_write_transaction_per_run(tmp_path):
    """Every entry of a run and its statistics are committed together."""
    from botopt.core import load_config
    from botopt.core.signals._pipeline import _run_signals

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")})
    mgr = CacheManager.from_config(cfg)
    commits = []
    store = mgr._backend()
    real = store.write
    store.write = lambda rows, stats, now: (commits.append((len(rows), dict(stats))),
                                             real(rows, stats, now))[1]
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    _run_signals(cfg, syms, as_of=datetime(2026, 9, 20, 12, tzinfo=timezone.utc), manager=mgr)
    assert len(commits) == 1
    n_rows, stats = commits[0]
    # features, regime, predictions per symbol; gates; the run (twice if it recorded one)
    assert 3 * 3 + 1 + 1 <= n_rows <= 3 * 3 + 1 + 2
    assert stats["features"][1] == 3 and stats["signals"][1] == 1


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
from botopt.core.state._cache import CacheManager
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
    assert caches["features"]["misses"] == 2 and caches["features"]["ttl_seconds"] == 600
    assert caches["features"]["life"] == "2 x 5m candles"
    set_ttl = runner.invoke(app, ["--cache-dir", str(c), "cache-stats", "--json"],
                            env={"BOTOPT_CACHE_GATES_TTL": "45"})
    gates = json.loads(set_ttl.stdout)["caches"]["gates"]
    assert (gates["ttl_seconds"], gates["life"]) == (45, "set")
    code = ("import sys\nfrom botopt.cli.main import app\n"
            "try:\n    app(['--cache-dir', sys.argv[1], 'cache-stats'])\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('polars', 'numpy', 'pandas', 'pyarrow', 'requests',\n"
            "                     'botopt.core.data._candles') if m in sys.modules]\n"
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


# -- what a decorated function's key holds (a hostile sweep's wrong hits) --------------------

def _factory(k):
    @cached("features")
    def scale(x):
        return x * k
    return scale


def test_closures_of_one_factory_never_share_an_entry(root):
    """Two closures of one factory share their code, not their values: make(3)(10) was
    served make(2)(10)'s 20."""
    assert _factory(2)(10) == 20 and _factory(3)(10) == 30 and _factory(2)(10) == 20


@pytest.mark.parametrize("a, b", [
    (pl.DataFrame({"x": [1]}), pl.Series("x", [1])),  # a frame and a series, equal data
    (pl.DataFrame({"x": [0.0, 1.0]}), pl.DataFrame({"x": [-0.0, 1.0]})),  # 1 / x differs
    (np.array(["s1"], dtype=object), np.array(["s2"], dtype=object)),  # hashed addresses
    (np.array([0.0]), np.array([-0.0])),
])
def test_arguments_that_differ_never_share_an_entry(root, a, b):
    @cached("features")
    def describe(x):
        if isinstance(x, pl.DataFrame):
            return ["frame", (1 / x["x"]).to_list()]
        if isinstance(x, pl.Series):
            return ["series", x.to_list()]
        return ["array", [str(v) for v in x.tolist()], (1 / x.astype(float)).tolist()
                if x.dtype != object else None]

    assert fingerprint(a) != fingerprint(b)
    with np.errstate(divide="ignore"):
        first, second = describe(a), describe(b)
        assert describe.__wrapped__(b) == second != first and describe(a) == first


def test_object_arrays_are_fingerprinted_by_content():
    keys = {fingerprint(np.array([f"sym{i}"], dtype=object)) for i in range(50)}
    assert len(keys) == 50
    assert fingerprint(np.array(["a"], dtype=object)) == \
        fingerprint(np.array(["a"], dtype=object))


@pytest.mark.parametrize("value", [10 ** 5000, np.longdouble(1.5)], ids=["huge", "longdouble"])
def test_values_json_cannot_hold_are_computed_uncached(root, value):
    calls = []

    @cached("features")
    def same(x):
        calls.append(1)
        return x

    assert same(value) == value and same(value) == value and len(calls) == 2
    looped: list = []
    looped.append(looped)
    assert same(looped) is looped and len(calls) == 3


def test_numpy_scalars_come_back_as_numpy_scalars(root):
    @cached("features")
    def half(x):
        return np.float64(x) / 2

    assert type(half(3)) is np.float64 and type(half(3)) is np.float64


@pytest.mark.parametrize("ttl", ["60", [1], 0, -5, float("nan"), float("inf"), 10 ** 400,
                                 True], ids=lambda v: str(v)[:8])
def test_a_bad_life_is_refused_when_decorating(ttl):
    with pytest.raises(UsageError, match="ttl_seconds"):
        cached("features", ttl_seconds=ttl)


@pytest.mark.parametrize("target", [None, 5])
def test_a_bad_name_or_target_is_a_usage_error(target):
    with pytest.raises(UsageError):
        cached(target)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="not a function"):
        cached("features")(target)


def test_a_partial_is_cached_by_its_bound_arguments(root):
    import functools

    p2, p3 = (cached("features")(functools.partial(pow, k)) for k in (2, 3))
    assert p2(5) == 32 and p3(5) == 243 and p2(5) == 32


_USERFN = """
from botopt.core import cached
RATE = {rate}

@cached("features")
def fee(x, cut={cut}):
    return [round(x * RATE * c, 9) for c in (cut,)]  # a comprehension: nested code

print(fee(100.0)[0])
"""


def test_edits_to_defaults_and_constants_are_never_served_old_results(tmp_path):
    """Across processes, as cron runs it: an edited default or module constant served the
    old result, and a function holding a comprehension never hit (its nested code's repr
    held a memory address)."""
    env = {**os.environ, "BOTOPT_CACHE_DIR": str(tmp_path / "c")}

    def run(rate: float, cut: float) -> float:
        (tmp_path / "userfn.py").write_text(_USERFN.format(rate=rate, cut=cut))
        out = subprocess.run([sys.executable, str(tmp_path / "userfn.py")], env=env,
                             capture_output=True, text=True, check=True)
        return float(out.stdout)

    assert run(0.001, 1.0) == 0.1 and run(0.001, 1.0) == 0.1
    hits = json.loads(subprocess.run(
        [sys.executable, "-m", "botopt.cli.main", "--cache-dir", str(tmp_path / "c"),
         "cache-stats", "--json"], capture_output=True, text=True, check=True,
        env=env).stdout)["caches"]["features"]["hits"]
    assert hits == 1  # the second process was answered from the first one's entry
    assert run(0.5, 1.0) == 50.0  # the constant edited
    assert run(0.5, 2.0) == 100.0  # the default edited


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs) for the cache directory: it can be filled up or
    remounted read-only. Needs root (mount); skipped elsewhere."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "disk"
    d.mkdir(mode=0o700)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(d)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "botopt.cli.main", *args],
                          capture_output=True, text=True)


def _fill(directory: Path) -> None:
    with open(directory / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_refusing_disk_degrades_with_one_warning(small_disk, tmp_path, fault):
    """A full or read-only cache disk: the run answers (equal to --no-cache), says so in one
    line, never 'internal error', and a healthy cache.db is never moved aside."""
    syms = ["-s", "BTCUSDT,ETHUSDT,SOLUSDT", "--json"]
    t0 = "2026-09-20T12:00:30Z"
    assert _cli("--cache-dir", str(small_disk), "signals", *syms, "--as-of", t0
                ).returncode == 0
    assert _cli("--cache-dir", str(tmp_path / "ref"), "signals", *syms, "--as-of", t0
                ).returncode == 0
    if fault == "full":
        _fill(small_disk)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for as_of in ("2026-09-20T12:05:30Z", "2026-09-20T12:06:30Z"):  # a new candle, then again
        r = _cli("--cache-dir", str(small_disk), "signals", *syms, "--as-of", as_of)
        ref = _cli("--cache-dir", str(tmp_path / "ref"), "signals", *syms, "--as-of", as_of,
                   "--no-cache")
        assert r.returncode == 0, r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
        warnings = [line for line in r.stderr.splitlines() if "WARNING" in line
                    and "notifications not queued" not in line]
        assert len(warnings) == 1 and "caching disabled" in warnings[0], r.stderr
        assert json.loads(r.stdout) == json.loads(ref.stdout)
    assert (small_disk / "cache" / "entries" / "cache.db").is_file()
    assert not [p for p in small_disk.rglob("*") if "corrupt" in p.name]


@pytest.mark.slow
def test_cache_clear_with_corrupt_statistics(tmp_path):
    c = tmp_path / "c"
    assert _cli("--cache-dir", str(c), "signals", "-s", "BTCUSDT", "--as-of",
                "2026-09-20").returncode == 0
    (c / "cache" / "stats.db").write_bytes(b"\0garbage" * 512)  # an older version's file
    db = c / "cache" / "entries" / "cache.db"
    db.write_bytes(b"not a database" * 512)
    for p in (Path(str(db) + "-wal"), Path(str(db) + "-shm")):
        p.unlink(missing_ok=True)
    stats = _cli("--cache-dir", str(c), "cache-stats", "--json")
    assert stats.returncode == 0 and "internal error" not in stats.stderr
    r = _cli("--cache-dir", str(c), "cache-clear")
    assert r.returncode == 0, r.stderr
    assert "internal error" not in r.stderr and not (c / "cache" / "stats.db").exists()
    again = _cli("--cache-dir", str(c), "signals", "-s", "BTCUSDT", "--as-of", "2026-09-20")
    assert again.returncode == 0 and "internal error" not in again.stderr


def test_config_show_prints_each_cache_life(tmp_path):
    r = runner.invoke(app, ["config", "show", "--json"])
    settings = json.loads(r.stdout)["settings"]
    assert settings["cache.features_ttl"]["value"] == "600 s (2 x 5m candles)"
    r = runner.invoke(app, ["config", "show", "--json"],
                      env={"BOTOPT_CACHE_PREDICTIONS_TTL": "30", "BOTOPT_DATA_INTERVAL": "1h"})
    settings = json.loads(r.stdout)["settings"]
    assert settings["cache.predictions_ttl"]["value"] == "30 s (set)"
    assert settings["cache.regime_ttl"]["value"] == "7200 s (2 x 1h candles)"


def test_default_root_for_config_less_entry_points(tmp_path, monkeypatch):
    """The documented order: what the CLI set, else $BOTOPT_CACHE_DIR, else the platform's
    user cache directory."""
    from botopt.core.state._workspace import default_root, set_default_root

    set_default_root(None)
    try:
        assert default_root() == Path(os.environ["XDG_CACHE_HOME"]) / "botopt"
        monkeypatch.setenv("BOTOPT_CACHE_DIR", str(tmp_path / "env"))
        assert default_root() == tmp_path / "env"
        set_default_root(tmp_path / "cli")
        assert default_root() == tmp_path / "cli"
    finally:
        set_default_root(None)


def test_a_commands_cache_dir_is_the_default_root_only_while_it_runs(tmp_path, monkeypatch):
    """--cache-dir makes the config-less entry points (decorators in a model plug-in, emit)
    follow the command; when it ends they are back to their own default, so an in-process
    caller's next call does not land in the last command's directory."""
    from botopt.core.state._workspace import default_root

    monkeypatch.setenv("BOTOPT_CACHE_DIR", str(tmp_path / "env"))
    result = runner.invoke(app, ["--cache-dir", str(tmp_path / "cmd"), "cache-stats", "--json"])
    assert result.exit_code == 0, result.output
    assert default_root() == tmp_path / "env"


def test_large_values_are_stored_deflated_and_read_back(cache_dir):
    from botopt.core.state._entry_format import MAGIC, MAGIC_D, MAGIC_Z

    mgr = CacheManager(root=cache_dir)
    big = {"rows": [[i, i * 0.5, f"S{i}"] for i in range(2000)]}
    row = {"c": "open,high,low,close,volume,ema_12,ema_26,rsi_14,atr_14", "t": 1767585300000,
           "v": [1.1274046037159366, 599.5074132501364, 52.75691757225222, None] * 3}
    mgr.set("signals", "big", big)
    mgr.set("signals", "row", row)
    mgr.set("signals", "small", [1, 2])
    mgr.close()
    con = _db(cache_dir)
    stored = dict(con.execute("SELECT key, value FROM Cache WHERE tag = 'signals'"))
    con.close()
    magics = {k.rsplit("\x1f", 1)[-1]: bytes(v[:2]) for k, v in stored.items()}
    assert magics == {"big": MAGIC_Z, "row": MAGIC_D, "small": MAGIC}
    assert len(stored[next(k for k in stored if k.endswith("big"))]) < 20_000  # ~60 KB raw
    fresh = CacheManager(root=cache_dir)
    assert fresh.get("signals", "big") == big and fresh.get("signals", "small") == [1, 2]
    assert fresh.get("signals", "row") == row


def test_digest_keys_are_stored_compact_and_never_meet_other_keys(tmp_path):
    """A 40-digit hex key (every stage's) is stored as its 27 base64 characters behind its
    own separator: fewer bytes a run writes, and no key of another form can equal it."""
    import base64
    import hashlib

    cache_dir = tmp_path / "c"
    hexkey = hashlib.sha1(b"x").hexdigest()
    compact = base64.urlsafe_b64encode(bytes.fromhex(hexkey)).decode()[:27]
    others = [compact, hexkey.upper(), hexkey[:39], hexkey + "0", "g" * 40]
    mgr = CacheManager(root=cache_dir)
    mgr.set("regime", hexkey, "TREND_UP")
    for k in others:
        mgr.set("regime", k, f"v-{k}")
    mgr.close()
    con = _db(cache_dir)
    keys = {k for (k,) in con.execute("SELECT key FROM Cache WHERE tag = 'regime'")}
    con.close()
    assert "regime\x1e" + compact in keys and "regime\x1f" + hexkey not in keys
    assert {"regime\x1f" + k for k in others} <= keys
    fresh = CacheManager(root=cache_dir)
    got = fresh.get_many("regime", [hexkey, *others])
    assert got == {hexkey: "TREND_UP", **{k: f"v-{k}" for k in others}}


def test_a_candles_stage_entries_sit_together_in_the_key_index(tmp_path):
    """Stage keys lead with their candle's minute (``time_ordered``): in the store's key
    index a candle's entries form one block, so a run's inserts (and the garbage
    collection's deletes) touch a few pages of it, not nearly every page."""
    from datetime import timedelta

    from botopt.core.signals._pipeline import _run_signals

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c")})
    t0 = datetime(2026, 9, 19, 6, 0, 30, tzinfo=timezone.utc)
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    for k in range(3):
        _run_signals(cfg, syms, as_of=t0 + timedelta(minutes=5 * k), notify=False)
    con = _db(tmp_path / "c")
    for tag in ("features", "regime", "predictions"):
        keys = sorted(k for (k,) in con.execute("SELECT key FROM Cache WHERE tag = ?",
                                                (tag,)))
        assert len(keys) == 3 * len(syms) and all("\x1e" in k for k in keys), tag
        candles = [k.split("\x1e")[1][:5] for k in keys]  # the minute's 30 leading bits
        blocks = [c for i, c in enumerate(candles) if i == 0 or c != candles[i - 1]]
        assert len(blocks) == len(set(candles)) == 3, (tag, candles)
    con.close()
