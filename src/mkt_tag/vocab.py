"""Vocabulary files: the labels a user tags with, and how to phrase and threshold them.

- ``.txt``: one label per line; blank lines and ``#`` comments ignored; UTF-8, BOM or not.
- ``.tsv`` / ``.csv``: a header row with a ``label`` column and optional columns
  ``prompts`` (phrasings, ``|``-separated, whose embeddings are averaged into the label's),
  ``threshold`` (the label's minimum score) and ``aliases`` (other names, ``|``-separated,
  scored on their own and merged into the label on output: the best of them counts).

Duplicates (also differing only in case or spacing) are dropped with a warning. Editing
functions keep comments and order and write atomically.
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mkt_tag.config import DEFAULT_TEMPLATE
from mkt_tag.errors import LabelFileError
from mkt_tag.files import atomic_write_text

_SPACES = re.compile(r"\s+")
LIST_SEPARATOR = "|"
COLUMNS = ("label", "prompts", "threshold", "aliases")


@dataclass
class Entry:
    """One label: its output name, the texts that describe it, its threshold, its aliases."""

    label: str
    prompts: list[str] = field(default_factory=list)  # phrasings; empty: the label itself
    threshold: float | None = None
    aliases: list[str] = field(default_factory=list)
    line: int = 0  # where it is in the file (1-based)

    @property
    def texts(self) -> list[str]:
        """What is put in the template for the label's own embedding (averaged)."""
        return self.prompts or [self.label]


@dataclass
class Vocabulary:
    """Entries in file order, with what was odd about the file."""

    entries: list[Entry]
    source: Path
    warnings: list[str] = field(default_factory=list)  # one line each, naming file and line

    @property
    def labels(self) -> list[str]:
        return [entry.label for entry in self.entries]

    @property
    def thresholds(self) -> dict[str, float]:
        """Per-label thresholds given in the file, keyed by ``normalise(label)``."""
        return {normalise(e.label): e.threshold for e in self.entries if e.threshold is not None}


def normalise(label: str) -> str:
    """The form used to spot duplicates: case-folded, spaces collapsed."""
    return _SPACES.sub(" ", label).strip().casefold()


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def read_text(path: Path) -> str:
    """A UTF-8 text file (vocabulary, thresholds), with clear errors for what users get wrong."""
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
    return text


def content_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) of the lines that are not blank or comments."""
    return [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def is_table(path: Path) -> bool:
    return path.suffix.lower() in (".tsv", ".csv")


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _split_list(value: str) -> list[str]:
    return [_clean(item) for item in value.split(LIST_SEPARATOR) if item.strip()]


def _table_entries(path: Path, lines: list[tuple[int, str]]) -> list[Entry]:
    if not lines:
        return []
    reader = csv.reader([line for _, line in lines], delimiter=_delimiter(path))
    header = [name.strip().lower() for name in next(reader)]
    if "label" not in header:
        raise LabelFileError(
            path,
            f"line {lines[0][0]}: the header needs a 'label' column "
            f"(columns: {', '.join(COLUMNS)})",
        )
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise LabelFileError(
            path, f"unknown column(s) {', '.join(unknown)} (columns: {', '.join(COLUMNS)})"
        )
    entries = []
    for (number, _), row in zip(lines[1:], reader, strict=True):
        cells = dict(zip(header, row, strict=False))
        threshold = None
        if cells.get("threshold", "").strip():
            threshold = parse_threshold(path, number, cells["threshold"])
        entries.append(
            Entry(
                _clean(cells.get("label", "")),
                _split_list(cells.get("prompts", "")),
                threshold,
                _split_list(cells.get("aliases", "")),
                number,
            )
        )
    return entries


def parse_threshold(path: Path, number: int, value: str) -> float:
    try:
        threshold = float(value)
    except ValueError:
        raise LabelFileError(path, f"line {number}: threshold {value!r} is not a number") from None
    if not math.isfinite(threshold):
        raise LabelFileError(path, f"line {number}: threshold must be a finite number")
    return threshold


def read_entries(path: str | Path) -> list[Entry]:
    """Every entry as written (duplicates and empty labels included), for checking."""
    path = Path(path)
    lines = content_lines(read_text(path))
    if is_table(path):
        return _table_entries(path, lines)
    return [Entry(_clean(line), line=number) for number, line in lines]


def read_labels(path: str | Path) -> Vocabulary:
    """Read a vocabulary; an empty one (or only comments) is an error."""
    path = Path(path)
    vocab = Vocabulary(entries=[], source=path)
    first_seen: dict[str, Entry] = {}
    for entry in read_entries(path):
        if not entry.label:
            vocab.warnings.append(f"{path}:{entry.line}: empty label, ignored")
            continue
        key = normalise(entry.label)
        if key in first_seen:
            seen = first_seen[key]
            vocab.warnings.append(
                f"{path}:{entry.line}: duplicate label {entry.label!r} (same as {seen.label!r} "
                f"on line {seen.line}), ignored"
            )
            continue
        first_seen[key] = entry
        vocab.entries.append(entry)
    if not vocab.entries:
        raise LabelFileError(path, "no labels (the file is empty or only has comments)")
    return vocab


# --- checking -------------------------------------------------------------------------------


def _odd_characters(text: str) -> list[str]:
    odd = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Co", "Cn") or char in "{}":
            odd.append(f"U+{ord(char):04X}")
    return odd


def check_file(
    path: str | Path, template: str = DEFAULT_TEMPLATE, context_length: int = 77
) -> list[str]:
    """``check`` with CLIP's tokenizer and the room ``template`` leaves in the text context."""
    from open_clip.tokenizer import SimpleTokenizer

    from mkt_tag.prompts import label_token_budget

    tokenizer = SimpleTokenizer()
    budget = label_token_budget(tokenizer, template, context_length)
    return check(path, lambda text: len(tokenizer.encode(text)), budget)


def check(path: str | Path, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Problems of a vocabulary file, one line each (empty list: clean).

    Duplicates (also case and spacing variants), empty labels, labels, prompts or aliases too
    long for the text context (``max_tokens``), and odd characters (control, invisible,
    braces that would break the template).
    """
    path = Path(path)
    problems = []
    seen: dict[str, Entry] = {}
    for entry in read_entries(path):
        where = f"{path}:{entry.line}"
        if not entry.label:
            problems.append(f"{where}: empty label")
            continue
        key = normalise(entry.label)
        if key in seen:
            kind = (
                "exact duplicate"
                if seen[key].label == entry.label
                else "duplicate (case or spacing)"
            )
            problems.append(f"{where}: {kind} of {seen[key].label!r} on line {seen[key].line}")
        else:
            seen[key] = entry
        for text in {entry.label, *entry.prompts, *entry.aliases}:
            n_tokens = count_tokens(text)
            if n_tokens > max_tokens:
                problems.append(
                    f"{where}: {text[:40]!r} is {n_tokens} tokens, more than the "
                    f"{max_tokens} the text context leaves for a label"
                )
            odd = _odd_characters(text)
            if odd:
                problems.append(f"{where}: {text[:40]!r} has odd characters ({', '.join(odd)})")
    if not seen:
        problems.append(f"{path}: no labels")
    return problems


# --- editing --------------------------------------------------------------------------------


def _line_label(path: Path, line: str) -> str | None:
    """The label a content line holds (None for blank lines, comments and a table header)."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    if not is_table(path):
        return _clean(line)
    row = next(csv.reader([line], delimiter=_delimiter(path)), [])
    return _clean(row[0]) if row else ""


def add(path: str | Path, labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Append labels not already there: (added, already present). Creates a missing .txt."""
    path = Path(path)
    text = read_text(path) if path.exists() else ""
    if not text and is_table(path):
        text = "label\n"
    present = {normalise(e.label) for e in read_entries(path)} if path.exists() else set()
    added, skipped = [], []
    new_lines = []
    for label in labels:
        label = _clean(label)
        if not label or normalise(label) in present:
            skipped.append(label)
            continue
        present.add(normalise(label))
        added.append(label)
        if is_table(path):
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=_delimiter(path), lineterminator="\n").writerow([label])
            new_lines.append(buffer.getvalue().rstrip("\n"))
        else:
            new_lines.append(label)
    if added:
        if text and not text.endswith("\n"):
            text += "\n"
        atomic_write_text(path, text + "\n".join(new_lines) + "\n")
    return added, skipped


def remove(path: str | Path, labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Remove labels (any case or spacing): (removed, not found). Comments and order stay."""
    path = Path(path)
    text = read_text(path)
    wanted = {normalise(label): label for label in labels}
    lines = text.splitlines(keepends=True)
    header_seen = not is_table(path)
    kept, removed = [], set()
    for line in lines:
        label = _line_label(path, line)
        if label is not None and not header_seen:
            header_seen = True  # the table's header row is never a label
        elif label is not None and normalise(label) in wanted:
            removed.add(normalise(label))
            continue
        kept.append(line)
    if removed:
        atomic_write_text(path, "".join(kept))
    return (
        [wanted[k] for k in wanted if k in removed],
        [wanted[k] for k in wanted if k not in removed],
    )


@dataclass
class Diff:
    added: list[str]
    removed: list[str]
    changed: list[str]  # same label, other prompts, threshold or aliases


def diff(old: str | Path, new: str | Path) -> Diff:
    """What changed between two vocabularies (labels compared case- and space-insensitively)."""
    before = {normalise(e.label): e for e in read_labels(old).entries}
    after = {normalise(e.label): e for e in read_labels(new).entries}

    def facts(entry: Entry) -> tuple[object, ...]:
        return (entry.prompts, entry.threshold, sorted(normalise(a) for a in entry.aliases))

    return Diff(
        added=[after[k].label for k in after if k not in before],
        removed=[before[k].label for k in before if k not in after],
        changed=[
            after[k].label for k in after if k in before and facts(after[k]) != facts(before[k])
        ],
    )
