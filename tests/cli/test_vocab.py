"""`mkt-tag vocab` through the CLI: check, edit, show, compare, pre-embed."""

from __future__ import annotations

from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_USAGE
from tests.conftest import TINY_CONFIG

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_check_exit_codes(tmp_path):
    clean = tmp_path / "clean.txt"
    clean.write_text("cat\ndog\n")
    result = run("vocab", "check", clean)
    assert result.exit_code == 0 and "clean (2 labels)" in result.stderr
    dirty = tmp_path / "dirty.txt"
    dirty.write_text("cat\nCat\n" + "word " * 80 + "\n")
    result = run("vocab", "check", dirty)
    assert result.exit_code == EXIT_ERROR
    assert "duplicate" in result.stdout and "tokens, more than the 69" in result.stdout
    assert run("vocab", "check", tmp_path / "nope.txt").exit_code == EXIT_ERROR


def test_add_remove_show_diff(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("# mine\ncat\n")
    assert run("vocab", "add", path, "dog", "cat").exit_code == 0
    assert path.read_text() == "# mine\ncat\ndog\n"
    shown = run("vocab", "show", path)
    assert shown.exit_code == 0 and "dog" in shown.stdout and "2 labels" in shown.stdout
    old = tmp_path / "old.txt"
    old.write_text("cat\nbird\n")
    changes = run("vocab", "diff", old, path)
    assert changes.stdout.splitlines() == ["+ dog", "- bird"]
    removed = run("vocab", "remove", path, "DOG")
    assert removed.exit_code == 0 and path.read_text() == "# mine\ncat\n"
    missing = run("vocab", "remove", path, "zebra")
    assert missing.exit_code == EXIT_ERROR and "not found" in missing.stderr


def test_embed_then_tag_uses_the_cache(tmp_path, photos):
    labels = tmp_path / "v.tsv"
    labels.write_text("label\taliases\ncat\tkitten\ndog\t\n")
    first = run("vocab", "embed", labels, "-m", TINY_CONFIG, "--precision", "fp32")
    assert first.exit_code == 0 and "encoded 3 text(s)" in first.stderr
    again = run("vocab", "embed", labels, "-m", TINY_CONFIG, "--precision", "fp32")
    assert "encoded 0 text(s)" in again.stderr


def test_vocab_usage_errors():
    assert run("vocab", "add").exit_code == EXIT_USAGE
    assert run("vocab").exit_code in (0, EXIT_USAGE)  # no command: help
