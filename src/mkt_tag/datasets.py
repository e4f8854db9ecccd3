"""Labelled image sets for training and evaluation.

Three formats, all giving one target per (image, label): +1 positive, -1 negative, 0 unknown
(ignored by losses and metrics, NUS-WIDE style):

- CSV / TSV with a ``path`` column and a ``labels`` column (labels joined by ``|``), plus
  optional ``negatives`` and ``unknown`` columns; mkt-tag's own CSV results (``path,tags,scores``)
  read as they are;
- JSONL (or a ``.json`` array) with the same fields, as lists or ``|``-joined strings; mkt-tag's
  own results (``"tags": [{"label": ..., "score": ...}]``) work too, so corrected tagging output
  can be trained on;
- a folder: a photo library, each photo's keywords read from its XMP, JSON and TXT sidecars and
  from the file itself, mkt-tag's own tags left out (``library_labels``).

A label of the vocabulary that a row does not mention is a negative, unless ``unknown`` lists
it (``*``: every label the row does not list, as ``mkt-tag review`` writes a photo only partly
checked). A label listed twice in one row takes the strongest entry: positive over negative
over unknown. Labels match the vocabulary by name, alias or hierarchy (``library_labels``). Paths
are relative to the data file's folder, or to ``images_root``.

Why the csv module and not pandas: rows are matched to the vocabulary one by one (no join),
and a bad row is reported by its line while the rest is kept. ``csv.reader`` gives line
numbers, tells short rows from long ones and keeps cells as written; ``pandas.read_csv``
guesses types ("NA" becomes NaN) and fails or pads ragged rows for the whole file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mkt_tag.errors import InputFileError
from mkt_tag.library_labels import LabelMatcher, photo_labels, split_labels
from mkt_tag.vocab import Entry, normalise

PATH_COLUMNS = ("path", "image", "file", "filename")
LABEL_COLUMNS = ("labels", "tags", "positives")
NEGATIVE_COLUMNS = ("negatives",)
UNKNOWN_COLUMNS = ("unknown", "ignore")
ALL_OTHER_LABELS = "*"  # as the whole ``unknown`` cell: every label the row does not list
MAX_EXAMPLES = 3

# Kinds of problem, as they read in a report ("12 rows whose image is missing (skipped), e.g. ...").
MISSING = "rows whose image is missing (skipped)"
DUPLICATE = "duplicate rows (later ones skipped)"
NO_PATH = "rows without an image path (skipped)"
UNLABELLED = "rows without a vocabulary label (skipped)"
UNKNOWN_LABELS = "labels not in the vocabulary (ignored)"
AMBIGUOUS = "keywords naming several vocabulary labels (not guessed: those labels unknown)"
BAD_SIDECAR = "unreadable sidecars or embedded keywords (their keywords not read)"
# What a photo library's summary says: normal in a library, so no error under ``strict``.
NO_KEYWORDS = "photos without keywords (left out)"
OWN_TAGS_ONLY = "photos with only mkt-tag's own tags (left out)"
NO_MATCH = "photos whose keywords name no vocabulary label (left out)"
OTHER_KEYWORDS = "keywords not in the vocabulary (ignored)"
NOTES = (NO_KEYWORDS, OWN_TAGS_ONLY, NO_MATCH, OTHER_KEYWORDS)


@dataclass
class Problems:
    """Counts and a few examples of each kind of bad row, for one clear report."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < MAX_EXAMPLES and example not in shown:
            shown.append(example)

    def lines(self) -> list[str]:
        """One line per kind: "12 rows whose image is missing (skipped), e.g. a.jpg, b.jpg"."""
        return [
            f"{count:,} {kind}, e.g. {', '.join(self.examples[kind])}"
            for kind, count in self.counts.items()
        ]

    def __bool__(self) -> bool:
        """Whether anything is wrong (a library's ``NOTES`` are not)."""
        return any(kind not in NOTES for kind in self.counts)


@dataclass
class LabelledImages:
    """Images with a target per vocabulary label (+1, -1, or 0 for unknown)."""

    paths: list[Path]
    labels: list[str]
    targets: np.ndarray  # N x C int8
    source: Path
    problems: Problems = field(default_factory=Problems)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: Sequence[int] | np.ndarray) -> LabelledImages:
        rows = np.asarray(rows, dtype=np.int64)
        return LabelledImages(
            [self.paths[i] for i in rows],
            list(self.labels),
            self.targets[rows],
            self.source,
            self.problems,
        )


@dataclass
class _Row:
    """One parsed record before it is matched to the vocabulary."""

    where: str  # "file:line" for messages
    path: Path | None  # None: the record names no image
    positives: list[str]
    negatives: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    library: bool = False  # a photo of a library: its keywords must name a label to count
    left_out: str = ""  # why a library photo is not an example (a ``NOTES`` kind); "": it is


def _pick(names: Iterable[Any], candidates: Sequence[str]) -> Any | None:
    lowered = {str(name).strip().lower(): name for name in names}
    return next((lowered[c] for c in candidates if c in lowered), None)


def _image_path(root: Path, value: Any) -> Path | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return root / value.strip()


def _read_table(source: Path, root: Path, separator: str) -> list[_Row]:
    kind = source.suffix[1:].upper()
    delimiter = "\t" if kind == "TSV" else ","
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(source, f"cannot read as {kind} ({error})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    try:
        header = next(reader, None)
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((reader.line_num, cells))
    except csv.Error as error:
        raise InputFileError(
            source, f"cannot read as {kind} (line {reader.line_num}: {error})"
        ) from None
    if header is None:
        raise InputFileError(source, f"cannot read as {kind} (empty file, no header row)")
    header = [name.strip() for name in header]
    path_column = _pick(header, PATH_COLUMNS)
    label_column = _pick(header, LABEL_COLUMNS)
    if path_column is None or label_column is None:
        found = ", ".join(repr(c) for c in header) or "none"
        hint = " - wrong separator? TSV files need the .tsv extension" if len(header) == 1 else ""
        raise InputFileError(
            source, f"needs a 'path' and a 'labels' column (header row); found {found}{hint}"
        )
    for number, cells in records:
        if len(cells) > len(header):
            raise InputFileError(
                source,
                f"cannot read as {kind} (line {number}: {len(cells)} fields, the header has "
                f"{len(header)}; quote cells that contain {delimiter!r})",
            )
    negatives = _pick(header, NEGATIVE_COLUMNS)
    unknown = _pick(header, UNKNOWN_COLUMNS)

    def cell(cells: list[str], column: str | None) -> str | None:
        index = header.index(column) if column is not None else len(cells)
        return cells[index] if index < len(cells) else None

    return [
        _Row(
            f"{source}:{number}",
            _image_path(root, cell(cells, path_column)),
            split_labels(cell(cells, label_column), separator),
            split_labels(cell(cells, negatives), separator),
            split_labels(cell(cells, unknown), separator),
        )
        for number, cells in records
    ]


def _json_records(source: Path) -> list[tuple[int, Any]]:
    """(line or item number, record) of a JSONL file, or of a ``.json`` array."""
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(source, f"cannot read ({error})") from None
    if source.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputFileError(source, f"not JSON ({error.msg}, line {error.lineno})") from None
        return list(enumerate(records, start=1))
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            found.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise InputFileError(source, f"line {number}: not JSON ({error.msg})") from None
    return found


def _read_jsonl(source: Path, root: Path, separator: str) -> list[_Row]:
    rows = []
    for number, record in _json_records(source):
        if not isinstance(record, dict):
            raise InputFileError(
                source, f'record {number}: expected an object like {{"path": ..., "labels": ...}}'
            )
        path_key = _pick(record, PATH_COLUMNS)
        label_key = _pick(record, LABEL_COLUMNS)
        negative_key = _pick(record, NEGATIVE_COLUMNS)
        unknown_key = _pick(record, UNKNOWN_COLUMNS)
        rows.append(
            _Row(
                f"{source}:{number}",
                _image_path(root, record.get(path_key)) if path_key is not None else None,
                split_labels(record.get(label_key) if label_key else None, separator),
                split_labels(record.get(negative_key) if negative_key else None, separator),
                split_labels(record.get(unknown_key) if unknown_key else None, separator),
            )
        )
    return rows


def _read_library(folder: Path, problems: Problems) -> list[_Row]:
    """A row per photo of ``folder`` (recursively): its keywords (``photo_labels``)."""
    from mkt_tag.images import find_images

    rows = []
    for image in find_images([folder], recursive=True)[0]:
        found = photo_labels(image)
        for error in found.errors:
            problems.add(BAD_SIDECAR, error)
        why = "" if found else OWN_TAGS_ONLY if found.own_tags else NO_KEYWORDS
        labels = (found.positives, found.negatives, found.unknown)
        rows.append(_Row(str(image), image, *labels, library=True, left_out=why))
    return rows


def _identity(path: Path) -> Path:
    """The same file under any spelling (``a/../b.jpg``, a symlink) gives the same key."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: fall back to the spelling
        return path.absolute()


def read_rows(
    source: Path, images_root: Path | None, separator: str, problems: Problems | None = None
) -> list[_Row]:
    """The records of a data file or photo library, not yet matched to a vocabulary.

    Raises:
        InputFileError: the file is missing, of an unknown kind, or malformed.
    """
    problems = problems if problems is not None else Problems()
    if source.is_dir():
        return _read_library(source, problems)
    if not source.exists():
        raise InputFileError(source, "file not found")
    root = images_root if images_root is not None else source.parent
    suffix = source.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_table(source, root, separator)
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(source, root, separator)
    raise InputFileError(
        source,
        "unknown data format: use .csv, .tsv, .jsonl (or .json) or a folder of photos",
    )


def load(
    source: str | Path,
    labels: Sequence[str | Entry],
    images_root: str | Path | None = None,
    separator: str = "|",
    keep_unlabelled: bool = True,
    strict: bool = False,
) -> LabelledImages:
    """Read a labelled image set against a vocabulary: ``labels``, or the vocabulary's
    entries (``Vocabulary.entries``), whose aliases then match too.

    Bad rows (no image path, missing image, duplicate path, no positive label when
    ``keep_unlabelled`` is False) are skipped; labels outside the vocabulary are ignored. All
    are counted in ``problems`` (unknown labels once per distinct label); with ``strict`` any
    of them is an error instead. A folder is a photo library: only photos whose keywords name
    a vocabulary label are examples; the others are left out and counted in ``problems``
    (``NOTES``, never an error).

    Raises:
        InputFileError: the file cannot be read, nothing usable is left, or ``strict`` and
            something is wrong.
    """
    source = Path(source)
    root = Path(images_root) if images_root is not None else None
    if root is not None and not root.is_dir():
        raise InputFileError(root, "image folder not found")
    matcher = LabelMatcher(labels)
    problems = Problems()
    reported: set[tuple[str, str]] = set()  # (kind, keyword): each reported once
    paths: list[Path] = []
    targets: list[np.ndarray] = []
    seen_paths: set[Path] = set()
    for row in read_rows(source, root, separator, problems):
        if row.path is None:
            problems.add(NO_PATH, row.where)
            continue
        key = _identity(row.path)
        if key in seen_paths:
            problems.add(DUPLICATE, row.where)
            continue
        if not row.path.is_file():
            problems.add(MISSING, str(row.path))
            continue
        if row.left_out:
            problems.add(row.left_out, row.where)
            continue
        rest_unknown = row.unknown == [ALL_OTHER_LABELS]
        matched = matcher.targets(row.positives, row.negatives, [] if rest_unknown else row.unknown)
        other = OTHER_KEYWORDS if row.library else UNKNOWN_LABELS
        notes = [(other, name, repr(name)) for name in matched.unmatched]
        notes += [
            (AMBIGUOUS, name, f"{name!r} ({', '.join(of)})") for name, of in matched.ambiguous
        ]
        for kind, name, example in notes:
            if (kind, normalise(name)) not in reported:
                reported.add((kind, normalise(name)))
                problems.add(kind, example)
        if row.library and not matched.named:
            problems.add(NO_MATCH, row.where)
            continue
        target = matched.target
        if rest_unknown:  # labels the row names neither way are unknown, not negatives
            listed = matcher.targets([], [], row.negatives).target == 0
            target[(target == -1) & ~listed] = 0
        if not (target == 1).any() and not keep_unlabelled:
            problems.add(UNLABELLED, row.where)
            continue
        seen_paths.add(key)
        paths.append(row.path)
        targets.append(target)
    if strict and problems:
        raise InputFileError(source, "bad rows (--strict): " + "; ".join(problems.lines()))
    if not paths:
        lines = problems.lines() or ["the file has no rows"]
        raise InputFileError(source, f"no usable labelled images ({'; '.join(lines)})")
    return LabelledImages(paths, matcher.labels, np.stack(targets), source, problems)


def seeded_split(n_images: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n_images)``: (kept rows, held-out rows), each sorted.

    ``fraction`` of the images (rounded, at least one) is held out: validation data for
    training, held-out images for checking calibrated thresholds.

    Raises:
        ValueError: ``fraction`` is not a share, or nothing would be left.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out share must lie between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(n_images)
    n_held = max(1, round(n_images * fraction))
    if n_held >= n_images:
        raise ValueError(f"{n_images} images are too few to hold out {fraction:.0%}")
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def split(
    data: LabelledImages, fraction: float, seed: int
) -> tuple[LabelledImages, LabelledImages]:
    """A seeded random (train, validation) split; ``fraction`` goes to validation."""
    if not 0 < fraction < 1:
        raise ValueError("validation fraction must be between 0 and 1")
    try:
        kept, held = seeded_split(len(data), fraction, seed)
    except ValueError:
        raise InputFileError(
            data.source,
            f"too few images ({len(data)}) to hold out {fraction:.0%} for validation; "
            "add images or give --val",
        ) from None
    return data.subset(kept), data.subset(held)
