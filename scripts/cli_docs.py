"""Render docs/cli.md from the commands' own --help (run: python scripts/cli_docs.py).

tests/test_docs.py checks that the committed file equals this output, so it cannot go stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

TARGET = Path(__file__).resolve().parent.parent / "docs" / "cli.md"

HEADER = f"""# Command-line reference

Generated from each command's `--help` by `scripts/cli_docs.py` (`make docs`); a test fails
when this file and the code disagree.

## Exit codes

| code | meaning |
| --- | --- |
| {EXIT_OK} | success |
| {EXIT_ERROR} | error, nothing done (bad label file, no input found, model not cached, ...) |
| {EXIT_USAGE} | usage error (unknown option, bad value) |
| {EXIT_PARTIAL} | finished, but some inputs failed; each is named on stderr |
| {EXIT_INTERRUPTED} | interrupted (Ctrl-C); finished work is kept, the same command resumes |
"""


def _commands(command: object, path: list[str]) -> list[list[str]]:
    """Every command path, depth first, in the order --help lists them."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, [*path, name])
    return found


def render() -> str:
    runner = CliRunner()
    parts = [HEADER]
    for path in _commands(typer.main.get_command(app), []):
        result = runner.invoke(app, [*path, "--help"], terminal_width=100, env={"COLUMNS": "100"})
        if result.exit_code != 0:
            raise RuntimeError(f"{path}: --help failed: {result.output}")
        title = " ".join(["mkt-tag", *path])
        parts.append(f"\n## `{title}`\n\n```text\n{result.stdout.rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}", file=sys.stderr)
