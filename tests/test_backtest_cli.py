"""``botopt backtest`` end to end on the real pairs (CliRunner over the real replay): every
option, the hostile inputs as one line with the right exit code, the files it writes."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app

runner = CliRunner()
SYMS = "ETH_BTC,LTC_BTC,XMR_BTC,ZEC_BTC"
PERIOD = ["--since", "2018-01-20T00:00", "--until", "2018-01-20T04:00"]


@pytest.fixture
def base(shared_data: Path, cache_dir: Path, clean_env) -> list[str]:
    return ["--cache-dir", str(cache_dir), "backtest", "--data-dir",
            str(shared_data / "candles" / "5m"), "--symbols", SYMS]


def _ok(args: list[str]):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr + r.stdout
    return r


def test_plain_table_has_every_section(base) -> None:
    r = _ok([*base, *PERIOD])
    out = r.stdout
    for part in ("backtest 2018-01-20 00:00 to 2018-01-20 04:00 UTC (5m, 4 symbols",
                 "engine", "regime", "direction", "ETH_BTC", "what the gates did",
                 "(passed)", "information coefficient", "model walk-forward", "h=12"):
        assert part in out, part
    assert "\x1b[" not in out and "▁" not in out  # plain off a terminal: no colour, no bars


def test_json_schema_and_horizons_cost(base) -> None:
    r = _ok([*base, *PERIOD, "--json", "--horizons", "2,1", "--cost-bps", "0"])
    d = json.loads(r.stdout)
    assert set(d) >= {"config", "interval", "since", "until", "symbols", "settings",
                      "overall", "breakdowns", "gates", "ic", "curves", "walk_forward"}
    assert d["settings"] == {"horizons": [1, 2], "cost_bps": 0.0}
    assert d["since"] == "2018-01-20T00:00:00Z" and d["symbols"] == SYMS.split(",")
    assert [s["horizon"] for s in d["overall"]["returns"]] == [1, 2]
    assert d["overall"]["candidates"] > d["overall"]["signals"] > 0
    assert sum(g["candidates"] for g in d["breakdowns"]["engine"]) == \
        d["overall"]["candidates"]
    assert len(d["walk_forward"]) == 4 and d["walk_forward"][0]["accuracy"] is not None
    assert {c["name"] for c in d["curves"]} >= {"all"}
    # cost 10 moves every mean by exactly 10
    d10 = json.loads(_ok([*base, *PERIOD, "--json", "--horizons", "1,2"]).stdout)
    for a, b in zip(d["overall"]["returns"], d10["overall"]["returns"], strict=True):
        assert b["mean_bps"] == pytest.approx(a["mean_bps"] - 10, abs=1e-9)


def test_csv_rows_equal_candidates(base, tmp_path) -> None:
    out = tmp_path / "signals.csv"
    r = _ok([*base, *PERIOD, "--json", "--csv", str(out)])
    d = json.loads(r.stdout)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == d["overall"]["candidates"]
    assert sum(row["gate_passed"] == "True" for row in rows) == d["overall"]["signals"]
    assert f"wrote {len(rows)} candidates" in r.stderr


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)


def test_html_and_png_reports(base, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    page = tmp_path / "r.html"
    _ok([*base, *PERIOD, "--quiet", "--report", str(page)])
    p = _Tags()
    p.feed(page.read_text(encoding="utf-8"))
    assert {"svg", "path", "table"} <= p.tags and "script" not in p.tags
    png = tmp_path / "r.png"
    r = _ok([*base, *PERIOD, "--report", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG" and r.stdout  # --report keeps the table


def test_compare_side_by_side(base, tmp_path) -> None:
    other = tmp_path / "strict.toml"
    other.write_text("[gates]\nmin_strength = 0.9\n")
    r = _ok([*base, *PERIOD, "--compare", str(other)])
    assert "A = default, B = " in r.stdout and "strict.toml" in r.stdout
    d = json.loads(_ok([*base, *PERIOD, "--compare", str(other), "--json"]).stdout)
    a, b = d["base"], d["other"]
    assert a["overall"]["candidates"] == b["overall"]["candidates"]  # gates differ only
    assert b["overall"]["signals"] < a["overall"]["signals"]


def test_quiet_prints_nothing(base) -> None:
    r = _ok([*base, *PERIOD, "--quiet"])
    assert r.stdout == "" and r.stderr == ""


@pytest.mark.parametrize("extra,code,needle", [
    (["--since", "2018-01-21", "--until", "2018-01-20"], 2, "before --since"),
    (["--since", "2018-01-20", "--until", "2018-01-20"], 2, "empty period"),
    (["--since", "2017-01-01", "--until", "2017-02-01"], 1, "before the data"),
    (["--since", "2019-01-01", "--until", "2019-02-01"], 1, "after the data"),
    (["--since", "yesterday", "--until", "2018-01-20"], 2, "--since"),
    ([*PERIOD, "--horizons", "0"], 2, "--horizons"),
    ([*PERIOD, "--horizons", "-3"], 2, "--horizons"),
    ([*PERIOD, "--horizons", "nan"], 2, "--horizons"),
    ([*PERIOD, "--horizons", "99999999999"], 2, "--horizons"),
    ([*PERIOD, "--cost-bps", "nan"], 2, "--cost-bps"),
    ([*PERIOD, "--cost-bps", "-5"], 2, "--cost-bps"),
    ([*PERIOD, "--cost-bps", "inf"], 2, "--cost-bps"),
    ([*PERIOD, "--report", "out.pdf"], 2, ".html or .png"),
])
def test_hostile_inputs_are_one_line(base, extra, code, needle) -> None:
    r = runner.invoke(app, [*base, *extra])
    assert r.exit_code == code, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert "internal error" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_compare_with_a_broken_config_is_a_config_error(base, tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gates]\nmin_strength = 'x'\n")
    r = runner.invoke(app, [*base, *PERIOD, "--compare", str(bad)])
    assert r.exit_code == 2 and "min_strength" in r.stderr
    missing = runner.invoke(app, [*base, *PERIOD, "--compare", str(tmp_path / "no.toml")])
    assert missing.exit_code == 2 and "no.toml" in missing.stderr


def test_unwritable_csv_is_one_line(base, tmp_path) -> None:
    r = runner.invoke(app, [*base, *PERIOD, "--csv", str(tmp_path / "no" / "dir" / "x.csv")])
    assert r.exit_code == 1 and "cannot write" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_outputs_replace_the_old_file_whole_or_not_at_all(base, tmp_path) -> None:
    """A write that fails half-way (a full disk) leaves the previous file as it was and no
    partial one; a device or pipe (``/dev/stdout``) is written in place, never replaced."""
    import os
    import stat

    from botopt.core.base._fs import output_writer

    out = tmp_path / "out"
    out.mkdir()
    old = out / "x.csv"
    old.write_text("previous run\n")
    with pytest.raises(OSError, match="disk full"), output_writer(old) as fh:
        fh.write(b"half of a new file")
        raise OSError(28, "disk full")
    assert old.read_text() == "previous run\n"
    assert sorted(p.name for p in out.iterdir()) == ["x.csv"]
    r = _ok([*base, *PERIOD, "--quiet", "--csv", str(old)])
    rows = old.read_text().splitlines()
    assert rows[0].startswith("symbol,") and len(rows) > 1 and not r.stdout
    assert stat.S_IMODE(old.stat().st_mode) == 0o666 & ~_umask()
    link = out / "link.csv"  # a link: the file it names is replaced, the link kept
    link.symlink_to(old)
    _ok([*base, *PERIOD, "--quiet", "--csv", str(link)])
    assert link.is_symlink() and old.read_text().splitlines() == rows
    if os.path.exists("/dev/stdout"):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        got: list[bytes] = []
        import threading

        reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
        reader.start()
        _ok([*base, *PERIOD, "--quiet", "--csv", str(fifo)])
        reader.join(30)
        assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the pipe, not a file in its place
        assert got and got[0].decode().splitlines() == rows


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_period_wider_than_the_data_cuts_the_walk_forward_over_the_data(base) -> None:
    """--since 0001-01-01 --until 9999-12-31: the walk-forward's periods were four spans of
    2,500 years, one holding every row; they split the data's 20 days now, and the header
    writes year 1 as 0001."""
    r = _ok([*base, "--since", "0001-01-01", "--until", "9999-12-31", "--json"])
    wf = json.loads(r.stdout)["walk_forward"]
    assert len(wf) == 4 and all(p["start"].startswith("2018-01") for p in wf)
    assert all(p["end"].startswith("2018-01") for p in wf)
    assert sum(p["test_rows"] for p in wf[1:]) > 0 and wf[-1]["train_rows"] > 0
    plain = _ok([*base, "--since", "0001-01-01", "--until", "9999-12-31"])
    assert plain.stdout.startswith("backtest 0001-01-01 00:00 to 9999-12-31 00:00 UTC")


def test_terminal_shows_sparklines_per_engine(base) -> None:
    from .test_terminal import ANSI, on_terminal

    text = ANSI.sub("", on_terminal(200, *base, *PERIOD))
    lines = [line for line in text.splitlines() if "engine" in line or " all " in line]
    assert any(any(c in line for c in "▁▂▃▄▅▆▇█") for line in lines), text


def test_sparkline_follows_the_curve() -> None:
    from datetime import datetime, timedelta, timezone

    from botopt.cli._cmd_backtest import sparkline
    from botopt.core.backtest._evaluate import Curve

    t0 = datetime(2018, 1, 20, tzinfo=timezone.utc)
    times = tuple(t0 + timedelta(hours=i) for i in range(24))
    up = sparkline(Curve("x", times, tuple(float(i) for i in range(24))), t0,
                   t0 + timedelta(hours=24), width=8)
    assert up[0] == "▁" and up[-1] == "█" and list(up) == sorted(up)
    down = sparkline(Curve("x", times, tuple(-float(i) for i in range(24))), t0,
                     t0 + timedelta(hours=24), width=8)
    assert down == up[::-1]
    flat = sparkline(Curve("x", times, (5.0,) * 24), t0, t0 + timedelta(hours=24), width=4)
    assert len(flat) == 4 and len(set(flat)) == 1
    assert sparkline(Curve("x", (), ()), t0, t0 + timedelta(hours=1)) == ""


def test_no_cache_interval_and_source_give_the_same_answer(base) -> None:
    cached = json.loads(_ok([*base, *PERIOD, "--json"]).stdout)
    again = json.loads(_ok([*base, *PERIOD, "--json"]).stdout)
    fresh = json.loads(_ok([*base, *PERIOD, "--json", "--no-cache", "--interval", "5m",
                            "--source", "local"]).stdout)
    assert cached == again == fresh


def test_one_symbol_has_no_ic_but_every_other_figure(base) -> None:
    args = [a if a != SYMS else "ETH_BTC" for a in base]
    d = json.loads(_ok([*args, *PERIOD, "--json"]).stdout)
    assert d["symbols"] == ["ETH_BTC"] and d["overall"]["candidates"] > 0
    assert all(i["periods"] == 0 and i["mean"] is None for i in d["ic"])
    assert [g["value"] for g in d["breakdowns"]["symbol"]] == ["ETH_BTC"]
