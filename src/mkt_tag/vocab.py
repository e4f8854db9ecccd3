"""Label files: the vocabulary a user tags with, and per-label thresholds.

A label file is UTF-8 text (a BOM is fine), one label per line; blank lines and lines starting
with ``#`` are ignored. Duplicates (also differing only in case or spacing) are dropped with a
warning. A thresholds file has ``label<TAB>threshold`` lines.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mkt_tag.errors import LabelFileError

_SPACES = re.compile(r"\s+")


@dataclass
class Vocabulary:
    """Labels in file order, with what was odd about the file."""

    labels: list[str]
    source: Path
    warnings: list[str] = field(default_factory=list)  # one line each, naming file and line


def normalise(label: str) -> str:
    """The form used to spot duplicates: case-folded, spaces collapsed."""
    return _SPACES.sub(" ", label).strip().casefold()


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, with clear errors for everything a user can get wrong."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise LabelFileError(path, "file not found") from error
    except IsADirectoryError as error:
        raise LabelFileError(path, "is a directory, expected a text file") from error
    except PermissionError as error:
        raise LabelFileError(path, "permission denied") from error
    except OSError as error:
        raise LabelFileError(path, f"cannot read ({error.strerror or error})") from error
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LabelFileError(path, f"not UTF-8 text (byte {error.start})") from error
    if "\x00" in text:
        raise LabelFileError(path, "binary file, expected one label per line")
    return text.splitlines()


def _content_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are not blank or comments."""
    return [
        (number, line.strip())
        for number, line in enumerate(_read_lines(path), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def read_labels(path: str | Path) -> Vocabulary:
    """Read a label file; an empty one (or only comments) is an error."""
    path = Path(path)
    vocab = Vocabulary(labels=[], source=path)
    first_seen: dict[str, tuple[int, str]] = {}
    for number, line in _content_lines(path):
        label = _SPACES.sub(" ", line)
        key = normalise(label)
        if key in first_seen:
            seen_at, seen_as = first_seen[key]
            vocab.warnings.append(
                f"{path}:{number}: duplicate label {label!r} (same as {seen_as!r} on line "
                f"{seen_at}), ignored"
            )
            continue
        first_seen[key] = (number, label)
        vocab.labels.append(label)
    if not vocab.labels:
        raise LabelFileError(path, "no labels (the file is empty or only has comments)")
    return vocab


def read_thresholds(path: str | Path) -> dict[str, float]:
    """Per-label thresholds from ``label<TAB>threshold`` lines, keyed by ``normalise(label)``."""
    path = Path(path)
    thresholds: dict[str, float] = {}
    for number, line in _content_lines(path):
        label, sep, value = line.rpartition("\t")
        if not sep:
            raise LabelFileError(path, f"line {number}: expected 'label<TAB>threshold'")
        try:
            threshold = float(value)
        except ValueError as error:
            raise LabelFileError(path, f"line {number}: {value!r} is not a number") from error
        if not math.isfinite(threshold):
            raise LabelFileError(path, f"line {number}: threshold must be a finite number")
        thresholds[normalise(label)] = threshold
    if not thresholds:
        raise LabelFileError(path, "no thresholds (the file is empty or only has comments)")
    return thresholds
