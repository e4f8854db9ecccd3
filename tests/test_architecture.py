"""The package's shape: which part may import which, and modules small enough to read.

Core modules (``mkt_tag/*.py``) are the model and the files it reads and writes; ``tagging``,
``evaluate`` and ``train`` are built on them; ``cli`` sits on top. Every import counts, also
one inside a function or under ``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mkt_tag"
MAX_LINES = 400

# part -> parts it must never import (a part is a subpackage, or "core")
FORBIDDEN = {
    "core": {"tagging", "evaluate", "train", "review", "cli"},
    "tagging": {"evaluate", "train", "review", "cli"},
    "evaluate": {"train", "review", "cli"},
    "train": {"tagging", "review", "cli"},
    "review": {"tagging", "evaluate", "train", "cli"},  # core only: no model, no torch
    "cli": set(),
}
# Only the command line prints with Rich and parses with Typer; the library reports through
# callbacks and return values.
CLI_ONLY = ("typer", "rich", "click")


def modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def part_of(path: Path, root: Path = PACKAGE) -> str:
    relative = path.relative_to(root)
    return relative.parts[0] if len(relative.parts) > 1 else "core"


def imported(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names (``from x import y`` gives
    both ``x`` and ``x.y``: y may be a module)."""
    package = [root.name, *path.relative_to(root).parent.parts]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    """The imports of ``path`` that break the rules, one line each."""
    if path.parent == root and path.name in ("__init__.py", "__main__.py"):
        return []  # the package's face (lazy public names) and its entry point
    part = part_of(path, root)
    names = imported(path, root)
    wrong = [
        f"imports {name}"
        for name in sorted(names)
        for other in FORBIDDEN[part]
        if name == f"mkt_tag.{other}" or name.startswith(f"mkt_tag.{other}.")
    ]
    if part != "cli":
        wrong += [f"imports {name}" for name in sorted(names) if name.split(".")[0] in CLI_ONLY]
    return wrong


def test_the_parts_exist():
    assert {part_of(path) for path in modules()} == set(FORBIDDEN)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path):
    assert violations(path) == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_fit_one_sitting(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


def test_the_rules_can_fail(tmp_path):
    """Lazy, relative and TYPE_CHECKING imports are seen; Rich in the library is caught."""
    root = tmp_path / "mkt_tag"
    (root / "train").mkdir(parents=True)
    (root / "model.py").write_text("def f():\n    from mkt_tag.tagging import tagger\n")
    (root / "train" / "trainer.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..tagging import job\n"
        "from .. import evaluate\nimport rich.progress\n"
    )
    assert violations(root / "model.py", root) == [
        "imports mkt_tag.tagging",
        "imports mkt_tag.tagging.tagger",
    ]
    assert violations(root / "train" / "trainer.py", root) == [
        "imports mkt_tag.tagging",
        "imports mkt_tag.tagging.job",
        "imports rich.progress",
    ]
