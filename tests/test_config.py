from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from botopt.cli.main import app
from botopt.core.base._config import STARTER_CONFIG, Config, load_config
from botopt.core.errors import ConfigError

runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "botopt.toml"
    p.write_text(text)
    return p


def test_defaults_without_any_config():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.path is None and cfg.is_default


def test_precedence_file_env_flag(tmp_path, monkeypatch):
    p = write(tmp_path, '[data]\ninterval = "1h"\nsource = "local"\ndata_dir = "/x"\n')
    cfg = load_config(p)
    assert cfg.data.interval == "1h" and cfg.sources["data.interval"] == f"file:{p}"
    monkeypatch.setenv("BOTOPT_DATA_INTERVAL", "15m")
    cfg = load_config(p)
    assert cfg.data.interval == "15m" and cfg.sources["data.interval"] == "env:BOTOPT_DATA_INTERVAL"
    cfg = load_config(p, overrides={"data.interval": "4h"})
    assert cfg.data.interval == "4h" and cfg.sources["data.interval"] == "flag"


def test_found_in_cwd_then_env_var(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "[gates]\nmin_strength = 0.7\n")
    assert load_config().gates.min_strength == 0.7
    other = tmp_path / "other.toml"
    other.write_text("[gates]\nmin_strength = 0.1\n")
    monkeypatch.setenv("BOTOPT_CONFIG", str(other))
    assert load_config().gates.min_strength == 0.1


def test_env_types_are_parsed(monkeypatch):
    monkeypatch.setenv("BOTOPT_CACHE_ENABLED", "false")
    monkeypatch.setenv("BOTOPT_TELEGRAM_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("BOTOPT_DATA_SYMBOLS", "BTCUSDT, SOLUSDT")
    cfg = load_config()
    assert cfg.cache.enabled is False
    assert cfg.telegram.max_batch_size == 3
    assert cfg.data.symbols == ("BTCUSDT", "SOLUSDT")


@pytest.mark.parametrize(
    "text, culprit",
    [
        ("[data]\nintervall = '5m'\n", "data.intervall"),
        ("[dat]\ninterval = '5m'\n", "[dat]"),
        ("[gates]\nmin_strength = 'high'\n", "gates.min_strength"),
        ("[cache]\nenabled = 1\n", "cache.enabled"),
        ("[data]\ninterval = '7x'\n", "data.interval"),
        ("[data]\nsource = 'ftp'\n", "data.source"),
        ("[features]\nema_fast = 30\n", "features.ema_fast"),
        ("[data\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, culprit):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=culprit.replace("[", r"\[").replace("]", r"\]")) as info:
        load_config(p)
    # the culprit as attributes as well: the key (or section), and the file when it is to blame
    if culprit == "invalid TOML":
        assert info.value.file == str(p) and info.value.key is None
    else:
        assert info.value.key == culprit.strip("[]")
    result = runner.invoke(app, ["--config", str(p), "config", "show"])
    assert result.exit_code == 2
    assert culprit in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("BOTOPT_CORRELATION_WINDOW", "a day")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "BOTOPT_CORRELATION_WINDOW" in result.stderr


@pytest.mark.parametrize("var, text", [("BOTOPT_CORRELATION_WINDOW", "\u0663\u0660\u0660"),
                                       ("BOTOPT_GATES_MIN_STRENGTH", "\u0660.\u0665"),
                                       ("BOTOPT_TELEGRAM_MAX_BATCH_SIZE", "\uff13")])
def test_digits_of_other_scripts_are_not_numbers(monkeypatch, var, text):
    """Python's int() and float() read "\u0663\u0660\u0660" (Arabic-Indic) as 300 and
    fullwidth digits too: a variable holding them is a paste from elsewhere, refused."""
    monkeypatch.setenv(var, text)
    with pytest.raises(ConfigError, match=var):
        load_config()


def test_a_wrong_type_is_named_as_people_say_it(tmp_path):
    p = write(tmp_path, "[notify.destinations.hook]\ntype = 'webhook'\n"
                        "url = 'https://example.com/h'\nsecret = 'x' \ntimeout = '5'\n")
    with pytest.raises(ConfigError, match="expected a number, got a string$"):
        load_config(p)
    p = write(tmp_path, "[notify.destinations.hook]\ntype = 'webhook'\nurl = 5\n")
    with pytest.raises(ConfigError, match="expected a string, got an integer$"):
        load_config(p)


@pytest.mark.parametrize("key", ["gates.max_correlation", "nosuch.key", "gates"])
def test_unknown_override_key_names_it(key):
    # a library caller's typo in load_config(overrides=...): a ConfigError, not a KeyError
    with pytest.raises(ConfigError, match="unknown setting") as info:
        load_config(overrides={key: 1})
    assert info.value.key == key


def test_missing_explicit_config_file(tmp_path):
    result = runner.invoke(app, ["--config", str(tmp_path / "nope.toml"), "config", "show"])
    assert result.exit_code == 2
    assert "nope.toml" in result.stderr
    result = runner.invoke(app, ["--config", "/dev/null", "config", "show"])
    assert result.exit_code == 2, result.stderr
    assert "config file /dev/null is not a regular file" in result.stderr
    result = runner.invoke(app, ["--config", str(tmp_path), "config", "show"])  # click's
    assert result.exit_code == 2 and result.stderr.startswith("botopt: error: ")
    assert len(result.stderr.splitlines()) == 1 and str(tmp_path) in result.stderr


def test_starter_config_is_valid_and_equals_defaults(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "botopt.toml")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "botopt.toml").read_text() == STARTER_CONFIG
    assert load_config(tmp_path / "botopt.toml") == Config()
    again = runner.invoke(app, ["init", str(tmp_path / "botopt.toml")])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_config_show_masks_secret_and_gives_sources(tmp_path, monkeypatch):
    token = "123456789:AAHsecretsecretsecretsecretXYZ"
    monkeypatch.setenv("BOTOPT_TELEGRAM_TOKEN", token)
    p = write(tmp_path, "[telegram]\nchat_id = -100123\n")
    result = runner.invoke(app, ["--config", str(p), "config", "show", "--json"])
    assert result.exit_code == 0, result.stderr
    assert token not in result.output
    data = json.loads(result.stdout)["settings"]
    assert data["telegram.token"] == {"value": "***", "source": "env:BOTOPT_TELEGRAM_TOKEN"}
    assert data["telegram.chat_id"]["value"] == "-100123"
    assert data["data.source"]["source"] == "default"
    plain = runner.invoke(app, ["--config", str(p), "config", "show"])
    assert token not in plain.output and "env:BOTOPT_TELEGRAM_TOKEN" in plain.stdout


@pytest.mark.parametrize("key", ["telegram.api_url", "binance.api_url",
                                 "data.exchange_api_url"])
def test_config_show_masks_a_password_in_any_url_setting(tmp_path, key):
    """A proxy's password written into a URL setting is a secret like the token: masked by
    ``config show`` (was printed for every URL but ``state.url``)."""
    section, name = key.split(".")
    p = write(tmp_path, f'[{section}]\n{name} = "http://me:pw-Zq81x@127.0.0.1:9/bot123x"\n')
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["--config", str(p), "config", "show", *extra])
        assert result.exit_code == 0, result.stderr
        assert "pw-Zq81x" not in result.output and "bot123x" not in result.output
        assert "me:***@127.0.0.1:9/bot***" in result.output


def test_a_destinations_bad_token_names_the_file_it_came_from(tmp_path):
    p = write(tmp_path, '[notify.destinations.chat2]\ntype = "telegram"\n'
                        'token = "123:short"\nchat_id = "42"\n')
    result = runner.invoke(app, ["--config", str(p), "config", "show"])
    assert result.exit_code == 2
    assert f"notify.destinations.chat2.token (file:{p}" in result.stderr, result.stderr
    assert "123:short" not in result.stderr


def test_a_misspelled_variable_is_named_in_a_warning(tmp_path):
    """BOTOPT_GATES_MIN_STRENGHT was ignored in silence (the default used); a variable of
    no known section, or the flags' own (BOTOPT_CACHE_DIR), says nothing."""
    env = {"BOTOPT_GATES_MIN_STRENGHT": "0.99", "BOTOPT_CACHE_DIR": str(tmp_path),
           "BOTOPT_SOMETHING_ELSE": "1"}
    result = runner.invoke(app, ["config", "show", "--json"], env=env)
    assert result.exit_code == 0
    warned = [line for line in result.stderr.splitlines() if "not a setting" in line]
    assert warned == ["botopt: WARNING: BOTOPT_GATES_MIN_STRENGHT is not a setting of "
                      "[gates]; ignored (did you mean BOTOPT_GATES_MIN_STRENGTH?)"]


def test_no_config_notice_once_on_stderr():
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0
    assert result.stderr.count("bundled sample data") == 1
    json.loads(result.stdout)
    quiet = runner.invoke(app, ["--quiet", "config", "show", "--json"])
    assert "sample data" not in quiet.stderr


@pytest.mark.parametrize("value, problem", [
    ("123456789:AAtesttokentesttokentesttokentest   # from BotFather", "contains '#'"),
    ("123456789:AAtesttokentesttokentesttokentest ", "spaces or a line break around it"),
    ("\t123456789:AAtesttokentesttokentesttokentest", "spaces or a line break around it"),
    ("123456789:short", "does not look like a bot token"),
    ("bot123456789:AAtesttokentesttokentesttokentest", "does not look like a bot token"),
    ("123456789:AAtest token testtokentesttokentest", "does not look like a bot token"),
])
def test_token_shape_checked_at_load_naming_key_and_origin_never_the_value(
        tmp_path, monkeypatch, value, problem):
    from botopt.core.base._config import token_problem

    assert problem in (token_problem(value) or "")
    monkeypatch.setenv("BOTOPT_TELEGRAM_TOKEN", value)
    res = runner.invoke(app, ["config", "show"])
    assert res.exit_code == 2
    line, = res.stderr.strip().splitlines()
    assert line.startswith("botopt: error: telegram.token (env:BOTOPT_TELEGRAM_TOKEN): ")
    assert problem in line and "AAtest" not in res.output and "short" not in res.output
    monkeypatch.delenv("BOTOPT_TELEGRAM_TOKEN")
    p = write(tmp_path, f"[telegram]\ntoken = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=rf"telegram.token \(file:{p}\): .*{problem}"):
        load_config(p)


def test_a_well_formed_token_loads():
    for tok in ("123456789:AAtesttokentesttokentesttokentest", "1:" + "-_aZ09" * 5):
        assert load_config(env={"BOTOPT_TELEGRAM_TOKEN": tok}).telegram.token == tok


def test_init_writes_a_private_file(tmp_path):
    import stat

    p = tmp_path / "botopt.toml"
    assert runner.invoke(app, ["init", str(p)]).exit_code == 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    p.chmod(0o644)
    assert runner.invoke(app, ["init", str(p), "--force"]).exit_code == 0
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def test_the_interval_is_parsed_once_and_carried_typed(tmp_path: Path, monkeypatch) -> None:
    from botopt.core.base._config import Interval

    monkeypatch.chdir(tmp_path)
    (tmp_path / "botopt.toml").write_text('[data]\ninterval = "1h"\n')
    for cfg, want in ((load_config(tmp_path / "botopt.toml"), 3_600_000),
                      (load_config(overrides={"data.interval": "15m"}), 900_000)):
        assert isinstance(cfg.data.interval, Interval) and cfg.data.interval.ms == want
        assert cfg.data.interval.seconds == want / 1000
    monkeypatch.setenv("BOTOPT_DATA_INTERVAL", "8m")
    cfg = load_config(overrides={"data.source": "local", "data.data_dir": str(tmp_path)})
    assert isinstance(cfg.data.interval, Interval) and cfg.data.interval.ms == 480_000
    # shown and stored as its text, as before
    assert json.dumps({"i": cfg.data.interval}) == '{"i": "8m"}' and f"{cfg.data.interval}" == "8m"
    with pytest.raises(ConfigError, match="unknown interval '7x'") as err:
        load_config(overrides={"data.interval": "7x"})
    assert err.value.key == "data.interval"


def test_interval_lengths_agree_with_the_plain_rule() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from botopt.core.base._config import Interval, interval_ms
    from botopt.core.errors import UsageError

    @given(st.integers(1, 9999), st.sampled_from("mhd"))
    def valid(n: int, unit: str) -> None:
        iv = Interval(f"{n}{unit}")
        assert iv.valid and iv.ms == n * _UNIT_MS[unit] == interval_ms(f"{n}{unit}")
        assert iv.delta.total_seconds() * 1000 == iv.ms

    @given(st.text(max_size=8))
    def anything(text: str) -> None:
        iv = Interval(text)
        if not iv.valid:
            with pytest.raises(UsageError):
                iv.seconds  # noqa: B018
            with pytest.raises(UsageError):
                interval_ms(text)

    valid()
    anything()


def test_init_writes_only_a_regular_file_whole(tmp_path):
    """init --force chmodded a device to 0600 and hung on a pipe; the file was truncated
    then written (a crash half-way left half a file)."""
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["init", "--force", str(fifo)])
    assert result.exit_code == 2 and "is a pipe, not a file to write" in result.stderr
    assert runner.invoke(app, ["init", "--force", str(tmp_path)]).exit_code == 2
    p = tmp_path / "b.toml"
    p.write_text("old")
    p.chmod(0o644)
    link = tmp_path / "link.toml"
    link.symlink_to(p)
    assert runner.invoke(app, ["init", "--force", str(link)]).exit_code == 0
    assert link.is_symlink() and p.read_text().startswith("#")  # the file it names
    assert p.stat().st_mode & 0o777 == 0o600
    assert not [x for x in tmp_path.iterdir() if x.name.endswith(".tmp")]
