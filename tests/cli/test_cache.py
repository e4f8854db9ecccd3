"""`mkt-tag cache` through the CLI, and re-tagging from the caches."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mkt_tag.cli import app
from tests.conftest import TINY_CONFIG

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_feature_cache_retag_and_cache_commands(tmp_path, photos, isolated_cache):
    labels = tmp_path / "l.txt"
    labels.write_text("cat\ndog\n")
    out = tmp_path / "r.json"
    args = ["tag", photos, "--labels", labels, "-m", TINY_CONFIG, "-o", out, "--feature-cache"]
    assert run(*args).exit_code == 0
    info = run("cache", "info")
    assert info.exit_code == 0
    row = next(line for line in info.stdout.splitlines() if "image features" in line)
    assert " 5 " in row
    labels.write_text("cat\ndog\nsunset\n")
    retag = run(*args, "--overwrite")
    assert retag.exit_code == 0
    assert all(len(r["tags"]) == 3 for r in json.loads(out.read_text()))
    cleared = run("cache", "clear", "--features")
    assert cleared.exit_code == 0 and "features.sqlite" in cleared.stderr
    assert not (isolated_cache / "features.sqlite").exists()
    assert (isolated_cache / "labels.sqlite").exists()


def test_clear_features_and_labels_clears_both(tmp_path, photos, isolated_cache):
    labels = tmp_path / "l.txt"
    labels.write_text("cat\ndog\n")
    args = ["tag", photos, "--labels", labels, "-m", TINY_CONFIG, "--feature-cache"]
    assert run(*args, "-o", tmp_path / "r.json").exit_code == 0
    assert (isolated_cache / "features.sqlite").exists()
    assert (isolated_cache / "labels.sqlite").exists()
    cleared = run("cache", "clear", "--features", "--labels")
    assert cleared.exit_code == 0
    assert "features.sqlite" in cleared.stderr and "labels.sqlite" in cleared.stderr
    assert not list(isolated_cache.glob("features.sqlite*"))
    assert not list(isolated_cache.glob("labels.sqlite*"))


def test_clear_labels_alone_keeps_the_features(tmp_path, photos, isolated_cache):
    labels = tmp_path / "l.txt"
    labels.write_text("cat\n")
    args = ["tag", photos, "--labels", labels, "-m", TINY_CONFIG, "--feature-cache"]
    assert run(*args, "-o", tmp_path / "r.json").exit_code == 0
    assert run("cache", "clear", "--labels").exit_code == 0
    assert not (isolated_cache / "labels.sqlite").exists()
    assert (isolated_cache / "features.sqlite").exists()
