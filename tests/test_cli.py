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


def test_commands_are_module_level_and_register_only_lists_them() -> None:
    # sqlite-utils' shape: a command is found and imported by name; register(app) is the list
    import ast
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "cli").glob("_cmd_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        (reg,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "register"]
        for stmt in reg.body:
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            text = ast.unparse(stmt)
            assert isinstance(call, ast.Call) and (text.startswith("app.add_typer(") or (
                isinstance(call.func, ast.Call) and text.startswith("app.command("))), \
                f"{path.name}: register does more than list commands: {text}"
        nested = [n.name for top in tree.body if isinstance(top, ast.FunctionDef)
                  for n in ast.walk(top) if n is not top and isinstance(n, ast.FunctionDef)
                  and any(".command(" in ast.unparse(d) for d in n.decorator_list)]
        assert not nested, f"{path.name}: commands defined inside functions: {nested}"


def _names(app: typer.Typer) -> set[str]:
    return set(typer.main.get_command(app).commands)


def test_the_command_table_is_what_the_modules_register() -> None:
    """``COMMANDS`` sends a run to the module that registers its command: each module's
    commands, registered alone, are exactly the table's for it, and together every
    command the whole app has."""
    from pathlib import Path

    from botopt.cli.main import COMMAND_MODULES, COMMANDS, make_app

    files = {p.stem.removeprefix("_cmd_")
             for p in (Path(__file__).resolve().parents[1] / "cli").glob("_cmd_*.py")}
    assert set(COMMAND_MODULES) == files
    for module in COMMAND_MODULES:
        assert _names(make_app([module])) == {c for c, m in COMMANDS.items() if m == module}
    assert _names(app) == set(COMMANDS)


def test_a_run_builds_only_the_command_it_names(monkeypatch) -> None:
    from botopt.cli.main import app_for

    for k in [k for k in __import__("os").environ if k.endswith("_COMPLETE")]:
        monkeypatch.delenv(k)
    assert _names(app_for(["signals", "--json"])) == {"signals"}
    assert _names(app_for(["--cache-dir", "signals", "-q", "cache-stats"])) == {
        "cache-stats", "cache-clear"}  # a global option's value is not the command
    assert _names(app_for(["--cache-dir=/x", "--quiet", "notify", "status"])) == {
        "notify", "notify-flush"}
    for args in ([], ["--help"], ["sigals"], ["--version"], ["--config"]):
        assert _names(app_for(args)) == _names(app), args
    monkeypatch.setenv("_BOTOPT_COMPLETE", "complete_bash")  # completion needs every name
    assert _names(app_for(["signals"])) == _names(app)


def test_the_installed_command_behaves_as_the_whole_app(tmp_path) -> None:
    """Whole processes: a typo is still told the near name, help still lists every
    command, and a command found after global options runs."""
    import subprocess
    import sys

    def botopt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "botopt.cli.main", *args],
                              capture_output=True, text=True, timeout=120)

    typo = botopt("--cache-dir", str(tmp_path), "cache-stat")
    assert typo.returncode == 2 and "cache-stats" in typo.stderr
    listing = botopt("--help")
    assert listing.returncode == 0 and all(c in listing.stdout for c in ("signals", "doctor"))
    stats = botopt("--cache-dir", str(tmp_path), "-q", "cache-stats", "--json")
    assert stats.returncode == 0 and stats.stdout.lstrip().startswith("{")


def test_the_clocked_runner_runs_the_command(tmp_path) -> None:
    """``benchmarks/_clocked`` (the soak's and the cron replay's every process) loads the CLI
    by name and builds the app as the installed command does: a whole process on a moved
    clock answers. It once read a module global that lazy building removed, and every
    simulated process failed with a KeyError only the slow soak tests saw."""
    import json
    import subprocess
    import sys
    import time

    epoch = time.time() + 86_400
    proc = subprocess.run([sys.executable, "-m", "botopt.benchmarks._clocked", str(epoch), "--",
                           "--cache-dir", str(tmp_path), "cache-stats", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "caches" in json.loads(proc.stdout)


def test_shared_options_keep_their_place_and_reach_the_command(tmp_path) -> None:
    import inspect

    from botopt.cli import _options as opt
    from botopt.cli._cmd_correlations import correlations

    names = list(inspect.signature(correlations).parameters)
    assert names == ["ctx", "symbols", "interval", "source", "data_dir", "as_of", "window",
                     "full", "json_out"]
    seen = {}

    @opt.candle_options
    @opt.output_options
    def probe(ctx, *, candles: opt.CandleArgs, out: opt.Output) -> None:
        seen.update(candles=candles, out=out)

    probe(ctx=None, symbols="BTCUSDT", interval="1h", source=None, data_dir=tmp_path,
          as_of=None, json_out=True)
    assert seen["candles"] == opt.CandleArgs("BTCUSDT", "1h", None, tmp_path, None)
    assert seen["candles"].overrides()["data__source"] == "local"  # --data-dir implies local
    assert seen["out"] == opt.Output(json=True, quiet=False)
    import pytest

    with pytest.raises(TypeError, match="no parameter 'candles'"):
        opt.candle_options(lambda ctx: None)


def test_a_refused_option_value_is_one_line_naming_the_option(tmp_path):
    """Values click refuses before botopt sees them: one line and exit 2, as any other bad
    input (click printed its usage, a hint, a blank line and the error). A command group
    given no command still shows its help."""
    (tmp_path / "adir").mkdir()
    cases = [
        (["backtest", "--cost-bps", "abc"], "--cost-bps"),
        (["backtest", "--csv", str(tmp_path / "adir")], "--csv"),
        (["signals", "--bogus"], "--bogus"),
        (["signals", "--symbols"], "--symbols"),
        (["notify", "bogus"], "bogus"),
        (["metrics", "-o", str(tmp_path / "adir")], "adir"),
    ]
    for args, culprit in cases:
        result = runner.invoke(app, ["--cache-dir", str(tmp_path / "c"), *args])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("botopt: error: "), (args, lines)
        assert culprit in lines[0], (args, lines)
    group = runner.invoke(app, ["notify"])
    assert group.exit_code == 2 and "Usage:" in group.output
