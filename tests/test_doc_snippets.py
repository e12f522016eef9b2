"""The library API as the docs write it: every ```python block in README.md and docs/*.md
runs verbatim, in its own interpreter, against a fresh cache directory. A doc edit that
breaks a snippet, or an API change that breaks the doc, fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from botopt.core.state._cache_stats import SEED_NAMES, CacheStats, get_cache_stats

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 2
            found.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1)))
    return found


SNIPPETS = snippets()
# The seed's documented API; each must appear in some snippet that the test runs.
SEED_API = [
    "cache_features()", "cache_predictions()", "cache_regime()", "cache_gate()",
    'get_cache_stats()\n', '["feature_cache"]["hit_rate"]', '["prediction_cache"]["hit_rate"]',
    "batch_notify(notifications, max_batch_size=5)", "AlphaEngineCoordinator()",
    ".generate_all_signals(", ".generate_all_signals_batch(symbols_features, current_regimes)",
]


def run_snippet(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTOPT_")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), BOTOPT_CACHE_DIR=str(home / "cache"))
    return subprocess.run([sys.executable, "-c", code], cwd=home, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_docs_show_the_seed_api_in_runnable_snippets() -> None:
    together = "\n".join(code for _, code in SNIPPETS)
    missing = [name for name in SEED_API if name not in together]
    assert not missing, f"no documented snippet shows {missing}"


@pytest.mark.parametrize("where,code", SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_documented_snippet_runs_verbatim(where: str, code: str, tmp_path: Path) -> None:
    proc = run_snippet(code, tmp_path)
    assert proc.returncode == 0, f"{where} failed:\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr


def test_readme_snippet_reads_its_own_hit_under_the_seed_name(tmp_path: Path) -> None:
    """The README's bot queues notifications and prints the seed-named hit rates: the
    second ``features_of`` call is a hit, so feature_cache's rate is above 0."""
    code = next(c for w, c in SNIPPETS if w.startswith("README.md") and "batch_notify" in c)
    proc = run_snippet(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    feature_rate, prediction_rate = map(float, proc.stdout.split())
    assert feature_rate == 0.5  # one miss, one hit
    assert 0.0 <= prediction_rate <= 1.0
    stats = get_cache_stats(tmp_path / "cache")
    assert stats["feature_cache"] is stats["features"]
    assert stats["features"]["hits"] == 1


def test_seed_names_alias_the_current_ones_without_listing_twice(cache_dir: Path) -> None:
    stats = get_cache_stats(cache_dir)
    assert isinstance(stats, CacheStats)
    for seed, current in SEED_NAMES.items():
        assert stats[seed] is stats[current]
        assert seed in stats and stats.get(seed) is stats[current]
        assert seed not in list(stats) and seed not in json.loads(json.dumps(stats))
    assert list(stats) == ["features", "regime", "predictions", "gates", "signals"]
    with pytest.raises(KeyError):
        stats["nonexistent_cache"]
    assert stats.get("nonexistent_cache") is None and "nonexistent_cache" not in stats
    assert 3 not in stats
