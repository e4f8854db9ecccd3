"""Docs that are generated from the code must match it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current():
    expected = _load_script("cli_docs").render()
    actual = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/cli.md is stale: run `make docs`"


def test_changelog_has_current_version():
    from mkt_tag import __version__

    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(__version__)} \(\d{{4}}-\d{{2}}-\d{{2}}\)", changelog, re.M)


def test_readme_first_screen_has_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:40]
    text = "\n".join(readme)
    assert "mkt-tag tag" in text and "pytest" in text
