"""[notify.destinations.*] and [notify.routes]: typed at load, every mistake one line naming
its key (exit 2), every secret hidden from config show, logs and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from botopt.core import load_config
from botopt.core.base._destinations import TELEGRAM
from botopt.core.base._redact import redact
from botopt.core.errors import ConfigError, exit_code_for

SECRET = "s3cr3t-hmac-key-0123456789"
DISCORD_TOKEN = "AbCdEf-GhIjKl_MnOpQrStUv0123456789"
DISCORD = f"https://discord.com/api/webhooks/112233445566/{DISCORD_TOKEN}"
GOOD = f"""
[notify.destinations.hook]
type = "webhook"
url = "https://example.com/botopt"
secret = "{SECRET}"
min_interval = 0.5

[notify.destinations.disc]
type = "discord"
url = "{DISCORD}"
max_batch_size = 10

[notify.routes]
signal = ["telegram", "disc", "hook"]
alert = "hook"
"""


WH = '[notify.destinations.x]\ntype = "webhook"\nsecret = "' + SECRET + '"\n'
WH_OK = WH + 'url = "https://a.b/c"\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "botopt.toml"
    p.write_text(text)
    return p


def test_a_config_without_destinations_sends_everything_to_telegram():
    cfg = load_config(env={})
    assert cfg.notify.destinations == ()
    assert cfg.notify.route("signal") == cfg.notify.route("anything") == (TELEGRAM,)


def test_destinations_and_routes_are_typed(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), env={})
    hook, disc = cfg.notify.destination("hook"), cfg.notify.destination("disc")
    assert hook is not None and hook.type == "webhook" and hook.min_interval == 0.5
    assert hook.secret == SECRET and hook.max_batch_size == 5
    assert disc is not None and disc.type == "discord" and disc.max_batch_size == 10
    assert cfg.notify.route("signal") == ("telegram", "disc", "hook")
    assert cfg.notify.route("alert") == ("hook",)
    assert cfg.notify.route("daily") == (TELEGRAM,)  # the default route stays
    hash(cfg)  # still a value


@pytest.mark.parametrize("text, key", [
    ('[notify.routes]\nsignal = ["nowhere"]\n', "notify.routes.signal"),
    ('[notify.routes]\nsignal = []\n', "notify.routes.signal"),
    ('[notify.routes]\n"Bad Type" = ["telegram"]\n', "notify.routes.Bad Type"),
    ('[notify.routes]\nsignal = [1]\n', "notify.routes.signal"),
    ('[notify]\nroutes = 3\n', "notify.routes"),
    ('[notify.destinations.x]\ntype = "pigeon"\nurl = "https://a.b"\n',
     "notify.destinations.x.type"),
    ('[notify.destinations.x]\nurl = "https://a.b"\n', "notify.destinations.x.type"),
    (WH + 'url = "ftp://a.b/c"\n', "notify.destinations.x.url"),
    (WH + 'url = "https://a b/c"\n', "notify.destinations.x.url"),
    (WH + 'url = "https://h:99999/c"\n', "notify.destinations.x.url"),
    (WH + 'url = "https://u:pw@h/c"\n', "notify.destinations.x.url"),
    ('[notify.destinations.x]\ntype = "webhook"\nurl = "https://a.b/c"\nsecret = ""\n',
     "notify.destinations.x.secret"),
    ('[notify.destinations.x]\ntype = "webhook"\nurl = "https://a.b/c"\nsecret = "   "\n',
     "notify.destinations.x.secret"),
    ('[notify.destinations.x]\ntype = "webhook"\nurl = "https://a.b/c"\nsecret = "short"\n',
     "notify.destinations.x.secret"),
    ('[notify.destinations.x]\ntype = "webhook"\nurl = "https://a.b/c"\n',
     "notify.destinations.x.secret"),
    (WH_OK + 'timeout = nan\n', "notify.destinations.x.timeout"),
    (WH_OK + 'max_batch_size = -1\n', "notify.destinations.x.max_batch_size"),
    (WH_OK + 'min_interval = 1e300\n', "notify.destinations.x.min_interval"),
    (WH_OK + 'colour = "red"\n', "notify.destinations.x.colour"),
    ('[notify.destinations.x]\ntype = "discord"\nurl = "https://example.com/hook"\n',
     "notify.destinations.x.url"),
    ('[notify.destinations.x]\ntype = "discord"\nurl = "http://discord.com/api/webhooks/1/t"\n',
     "notify.destinations.x.url"),
    ('[notify.destinations.x]\ntype = "discord"\nurl = "https://evil.com/api/webhooks/1/t"\n',
     "notify.destinations.x.url"),
    ('[notify.destinations.x]\ntype = "discord"\nurl = "https://discord.com/api/webhooks/1/t"\n'
     'max_batch_size = 11\n', "notify.destinations.x.max_batch_size"),
    ('[notify.destinations.x]\ntype = "discord"\n'
     'url = "https://discord.com/api/webhooks/1/t?wait=false"\n', "notify.destinations.x.url"),
    ('[notify.destinations.x]\ntype = "telegram"\nchat_id = "1"\n',
     "notify.destinations.x.token"),
    ('[notify.destinations.x]\ntype = "telegram"\ntoken = "nope"\nchat_id = "1"\n',
     "notify.destinations.x.token"),
    ('[notify.destinations.telegram]\ntype = "webhook"\n', "notify.destinations.telegram"),
    ('[notify.destinations."Bad Name"]\ntype = "webhook"\n', "notify.destinations.Bad Name"),
    ('[notify.destinations]\nx = 3\n', "notify.destinations.x"),
])
def test_each_mistake_is_one_line_naming_its_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    message = str(info.value)
    assert "\n" not in message and key in message and info.value.key == key
    assert exit_code_for(info.value) == 2


def test_secrets_never_appear_in_config_show_or_errors(tmp_path):
    p = write(tmp_path, GOOD)
    show = subprocess.run([sys.executable, "-m", "botopt.cli.main", "--config", str(p), "config",
                           "show", "--json"], capture_output=True, text=True, timeout=60)
    assert show.returncode == 0, show.stderr
    assert SECRET not in show.stdout and DISCORD_TOKEN not in show.stdout
    assert "https://discord.com/api/webhooks/112233445566/***" in show.stdout
    assert "notify.routes.signal" in show.stdout
    # a broken route next to the secrets: the error names the route, shows no secret
    bad = write(tmp_path, GOOD.replace('alert = "hook"', 'alert = "gone"'))
    run = subprocess.run([sys.executable, "-m", "botopt.cli.main", "--config", str(bad), "config",
                          "show"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "notify.routes.alert" in run.stderr
    assert SECRET not in run.stderr + run.stdout and DISCORD_TOKEN not in run.stderr


def test_a_discord_url_is_redacted_wherever_it_appears():
    text = f"ConnectionError: HTTPSConnectionPool: Max retries with url: {DISCORD}?wait=true"
    assert DISCORD_TOKEN not in redact(text) and "webhooks/112233445566/***" in redact(text)


@pytest.mark.parametrize("var", ["BOTOPT_NOTIFY_ROUTES", "BOTOPT_NOTIFY_DESTINATIONS"])
def test_a_table_set_from_the_environment_is_refused_not_ignored(var):
    with pytest.raises(ConfigError) as info:
        load_config(env={var: '{"signal": ["hook"]}'})
    assert var in str(info.value) and "botopt.toml" in str(info.value)


def test_a_discord_thread_is_allowed_and_its_token_still_hidden(tmp_path):
    url = f"{DISCORD}?thread_id=998877"
    cfg = load_config(write(tmp_path, f'[notify.destinations.t]\ntype = "discord"\n'
                                      f'url = "{url}"\n'), env={})
    from botopt.core.base._destinations import redacted_url
    from botopt.core.delivery._http_dest import HttpClient

    dest = cfg.notify.destination("t")
    assert dest is not None and DISCORD_TOKEN not in redacted_url(dest)
    assert HttpClient(dest).url.endswith("?thread_id=998877&wait=true")
