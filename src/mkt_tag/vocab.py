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
import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mkt_tag.config import DEFAULT_TEMPLATE
from mkt_tag.errors import LabelFileError
from mkt_tag.files import atomic_write_text
from mkt_tag.keywords import leaf

_SPACES = re.compile(r"\s+")
LIST_SEPARATOR = "|"
COLUMNS = ("label", "prompts", "threshold", "aliases")

# Limits checked before anything is tokenised: a wrong file (a log, a word list of millions of
# lines) fails at once instead of keeping the text tower busy for hours. Every image is scored
# against every label at once, so a vocabulary is held whole, not streamed; the limits are ten
# times the largest real ones (Open Images: ~20,000 classes).
MAX_LABEL_FILE_BYTES = 32 * 2**20  # 32 MiB: 200,000 rows of 160 bytes
MAX_LABELS = 200_000  # entries (rows) of a vocabulary
MAX_TEXTS = 1_000_000  # labels, prompts and aliases together: what the text tower encodes
MAX_LABEL_CHARS = 1_000  # one label, prompt or alias (CLIP's 77 tokens hold ~300 characters)


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
        """What is put in the template for the label's own embedding (averaged); a label
        written as a path (``animal/dog/chihuahua``) is phrased by its last level."""
        return self.prompts or [leaf(self.label)]


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
        with path.open("rb") as handle:
            raw = handle.read(MAX_LABEL_FILE_BYTES + 1)  # bounded: a pipe has no size to check
    except FileNotFoundError as error:
        raise LabelFileError(path, "file not found") from error
    except IsADirectoryError as error:
        raise LabelFileError(path, "is a directory, expected a text file") from error
    except PermissionError as error:
        raise LabelFileError(path, "permission denied") from error
    except OSError as error:
        raise LabelFileError(path, f"cannot read ({error.strerror or error})") from error
    if len(raw) > MAX_LABEL_FILE_BYTES:
        raise _too_big(path, f"larger than {MAX_LABEL_FILE_BYTES // 2**20} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise LabelFileError(path, f"not UTF-8 text (byte {error.start})") from error
    if "\x00" in text:
        raise LabelFileError(path, "binary file, expected one label per line")
    return text


def _too_big(path: Path, what: str) -> LabelFileError:
    return LabelFileError(path, f"{what}, the most a label file may have (a wrong file?)")


def content_lines(text: str, stop: int | None = None) -> list[tuple[int, str]]:
    """(line number, text) of the lines that are not blank or comments; the first ``stop``."""
    lines = (
        (number, line)
        for number, line in enumerate(_split_lines(text), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    )
    return list(itertools.islice(lines, stop))


def _split_lines(text: str, block: int = 2**20) -> Iterator[str]:
    """``text.splitlines()`` a block at a time, so that the first lines of a huge text come
    at once (blocks end after a newline: the same lines)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + block) + 1 or len(text)
        yield from text[start:end].splitlines()
        start = end


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
    try:
        rows = list(reader)
    except csv.Error as error:  # e.g. a cell past the csv module's 131,072 characters
        number = lines[max(reader.line_num, 1) - 1][0]
        raise LabelFileError(path, f"line {number}: not a valid table row ({error})") from None
    header = [name.strip().lower() for name in rows[0]]
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
    # Counted before anything is split: cleaning a million aliases alone takes seconds.
    lists = [header.index(name) for name in ("prompts", "aliases") if name in header]
    texts = sum(
        1 + sum(row[i].count(LIST_SEPARATOR) + 1 for i in lists if i < len(row)) for row in rows
    )
    if texts > MAX_TEXTS:
        raise _too_big(path, f"more than {MAX_TEXTS:,} labels, prompts and aliases together")
    entries = []
    for (number, _), row in zip(lines[1:], rows[1:], strict=True):
        cells = dict(zip(header, row, strict=False))
        threshold = None
        if cells.get("threshold", "").strip():
            threshold = parse_threshold(path, number, cells["threshold"])
        entry = Entry(
            _clean(cells.get("label", "")),
            _split_list(cells.get("prompts", "")),
            threshold,
            _split_list(cells.get("aliases", "")),
            number,
        )
        for text in (entry.label, *entry.prompts, *entry.aliases):
            _checked_length(path, number, text)
        entries.append(entry)
    return entries


def _checked_length(path: Path, number: int, text: str) -> str:
    """``text`` itself; an error if it is too long to be a label (checked before cleaning)."""
    if len(text.strip()) > MAX_LABEL_CHARS:
        raise LabelFileError(
            path,
            f"line {number}: a label, prompt or alias of {len(text.strip()):,} characters; "
            f"at most {MAX_LABEL_CHARS:,} are allowed (a wrong file?)",
        )
    return text


def parse_threshold(path: Path, number: int, value: str) -> float:
    try:
        threshold = float(value)
    except ValueError:
        raise LabelFileError(path, f"line {number}: threshold {value!r} is not a number") from None
    if not math.isfinite(threshold):
        raise LabelFileError(path, f"line {number}: threshold must be a finite number")
    return threshold


def read_entries(path: str | Path) -> list[Entry]:
    """Every entry as written (duplicates and empty labels included), for checking; a file
    past the limits above is an error."""
    path = Path(path)
    header = 1 if is_table(path) else 0
    lines = content_lines(read_text(path), stop=MAX_LABELS + header + 1)
    if len(lines) > MAX_LABELS + header:
        raise _too_big(path, f"more than {MAX_LABELS:,} labels")
    if header:
        return _table_entries(path, lines)
    return [
        Entry(_clean(_checked_length(path, number, line)), line=number) for number, line in lines
    ]


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
    odd = ("Cc", "Cf", "Co", "Cn")  # control, format (invisible), private use, unassigned
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in odd or c in "{}"]


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
            same = seen[key].label == entry.label
            kind = "exact duplicate" if same else "duplicate (case or spacing)"
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
    added, skipped, new_lines = [], [], []
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
