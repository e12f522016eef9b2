"""One answer on the bot token under cron, the same in every doc and template."""

from __future__ import annotations

import re
from pathlib import Path

from botopt.core.base._config import STARTER_CONFIG

ROOT = Path(__file__).resolve().parents[1]
ADVICE = ("Keep the bot token in botopt.toml (mode 600, as `botopt init` writes it): the "
          "crontab `botopt cron` prints points at that file, and cron does not see your "
          "shell's variables.")
# Where a user is told where the token goes.
GIVES_ADVICE = ["docs/configuration.md", "docs/notifications.md", "docs/cron.md",
                "docs/getting-started.md"]
# What the other answer looked like (the issue found both in the docs at once).
CONTRADICTIONS = [r"prefer\W+(the\W+environment\W+for\W+the\W+token|`?BOTOPT_TELEGRAM_TOKEN)",
                  r"token[^.]*\bin\b[^.]*crontab line"]


def flat(text: str) -> str:
    """Markdown and comments folded to one spaced line."""
    text = re.sub(r"^\s*(#|\||>)\s?", " ", text, flags=re.M)
    return re.sub(r"\s+", " ", text)


def test_every_doc_that_says_where_the_token_goes_says_the_same():
    for rel in GIVES_ADVICE:
        assert ADVICE in flat((ROOT / rel).read_text()), rel
    assert ADVICE in flat(STARTER_CONFIG)


def test_no_doc_or_template_gives_the_other_answer():
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in
             [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]}
    texts["botopt init template"] = STARTER_CONFIG
    from botopt.core.watch import _cron, _doctor

    texts["cron template"] = Path(_cron.__file__).read_text()
    texts["doctor"] = Path(_doctor.__file__).read_text()
    for name, text in texts.items():
        for pattern in CONTRADICTIONS:
            assert not re.search(pattern, flat(text), flags=re.I), (name, pattern)
