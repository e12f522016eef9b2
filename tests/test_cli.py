"""Every command has help text and is in the generated CLI reference (docs/cli.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from botopt.cli._docgen import iter_commands, render
from botopt.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _commands():
    return iter_commands(typer.main.get_command(app))


def test_every_command_has_help_text():
    missing = [" ".join(path) for path, cmd in _commands() if not (cmd.help or "").strip()]
    assert missing == []


def test_every_command_answers_help():
    for path, _ in _commands():
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.stdout


def test_cli_reference_is_current():
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render(), (
        "docs/cli.md is stale: run python -m botopt.cli._docgen > docs/cli.md")
    for path, _ in _commands():
        assert f"## `botopt {' '.join(path)}`" in committed


def test_every_top_level_command_is_in_the_user_guide():
    guide = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md")
                      if p.name != "cli.md")
    missing = [path[0] for path, _ in _commands() if len(path) == 1
               and f"botopt {path[0]}" not in guide]
    assert missing == []


def test_unknown_command_and_option_exit_2():
    assert runner.invoke(app, ["frobnicate"]).exit_code == 2
    assert runner.invoke(app, ["signals", "--frobnicate"]).exit_code == 2


def _app_raising(exc: Exception) -> typer.Typer:
    from botopt.cli.main import BotoptGroup

    demo = typer.Typer(cls=BotoptGroup)

    @demo.callback()
    def main() -> None:
        """Demo."""

    @demo.command()
    def boom() -> None:
        """Raise."""
        raise exc

    return demo


def test_bug_is_one_line_without_traceback_unless_debug(monkeypatch):
    demo = _app_raising(ValueError("unexpected thing"))
    result = runner.invoke(demo, ["boom"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "botopt: internal error: ValueError: unexpected thing (run with --debug for the "
        "traceback)"]
    monkeypatch.setenv("BOTOPT_DEBUG", "1")
    assert "Traceback" in runner.invoke(demo, ["boom"]).stderr


def test_botopt_errors_map_to_exit_codes_and_redact_secrets():
    from botopt.core.base._redact import register_secret
    from botopt.core.errors import ConfigError, DataError, TelegramConfigError

    register_secret("987654321:SECRETSECRETSECRETSECRET")
    cases = [(DataError("bad row"), 1), (ConfigError("bad key"), 2),
             (TelegramConfigError("401 for https://x/bot987654321:SECRETSECRETSECRETSECRET/y"), 2)]
    for exc, code in cases:
        result = runner.invoke(_app_raising(exc), ["boom"])
        assert result.exit_code == code
        assert "SECRET" not in result.stderr and result.stderr.startswith("botopt: error: ")


def test_sample_data_notice_only_where_candles_are_read(tmp_path):
    # No botopt.toml (clean_env): signals says the sample data stands in; commands that read
    # no candles stay silent on stderr, so cron mails nothing for them.
    cache = ["--cache-dir", str(tmp_path)]
    sig = runner.invoke(app, [*cache, "signals", "-s", "BTCUSDT", "--as-of",
                              "2026-09-20T12:00:00Z"])
    assert sig.exit_code == 0, sig.stderr
    assert sig.stderr.splitlines() == ["botopt: no configuration found; using the bundled "
                                       "sample data (botopt init writes a botopt.toml)"]
    quiet = runner.invoke(app, [*cache, "--quiet", "signals", "-s", "BTCUSDT", "--as-of",
                                "2026-09-20T12:00:00Z"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    for args in (["cache-stats"], ["notify", "list"], ["status"]):
        res = runner.invoke(app, [*cache, *args])
        assert res.exit_code == 0, (args, res.stderr)
        assert res.stderr == "", args
