"""The corrections file: every decision of a review, saved at once, readable as training data.

One JSON line per photo with a decision (``results.corrections.jsonl`` beside the results)::

    {"path": "/photos/a.jpg", "labels": ["dog", "beach"], "negatives": ["cat"], "unknown": "*"}

- ``labels``: the tags a person accepted, and the labels they added: positives (+1);
- ``negatives``: the tags they rejected (-1);
- ``unknown``: ``"*"`` while the photo is not reviewed: every label it does not list is
  unknown (0), neither right nor wrong; ``[]`` once it is: every other label is a negative.

That is the data format of ``mkt-tag train --data`` and ``mkt-tag eval --data``
(docs/datasets.md), so the file is a training set, a test set and calibration data as it
stands. It is rewritten atomically (``files.atomic_write_text``) on every decision, before
the page hears that the decision is saved: killing the browser or the server loses nothing
that was acknowledged. Rows of photos that are not in the review are kept as they are.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mkt_tag.datasets import ALL_OTHER_LABELS
from mkt_tag.errors import InputFileError
from mkt_tag.files import atomic_write_text
from mkt_tag.results import image_key

ACCEPT, REJECT, CLEAR = "accept", "reject", "clear"


def corrections_path(source: Path) -> Path:
    """Where the corrections of ``source`` go: ``tags.corrections.jsonl`` beside
    ``tags.csv``; inside a folder of sidecars, ``mkt-tag.corrections.jsonl``."""
    source = Path(source)
    if source.is_dir():
        return source / "mkt-tag.corrections.jsonl"
    return source.with_name(f"{source.stem}.corrections.jsonl")


@dataclass
class Decisions:
    """What a person decided about one photo."""

    verdicts: dict[str, bool] = field(default_factory=dict)  # label: right (True) or wrong
    reviewed: bool = False  # every label it does not accept is wrong

    def __bool__(self) -> bool:
        return bool(self.verdicts) or self.reviewed

    def positives(self) -> list[str]:
        return [label for label, right in self.verdicts.items() if right]

    def negatives(self) -> list[str]:
        return [label for label, right in self.verdicts.items() if not right]


class Corrections:
    """The decisions of a review, by image (``results.image_key``), and their file.

    Thread-safe: the server answers requests in several threads, and each change is written
    before the next one starts.
    """

    def __init__(self, path: Path) -> None:
        """Read ``path`` if it exists (a review resumed), else start empty.

        Raises:
            InputFileError: the file exists but cannot be read, or a line is not a
                corrections row.
        """
        self.path = Path(path)
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[str, Decisions]] = {}  # key: (path as written, decisions)
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InputFileError(self.path, f"cannot read ({error})") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                path, decisions = _decisions(record)
            except ValueError as error:
                raise InputFileError(
                    self.path, f"line {number}: not a corrections row ({error}); fix or delete it"
                ) from None
            self._rows[image_key(Path(path))] = (path, decisions)

    def get(self, path: Path) -> Decisions:
        """The decisions about ``path`` (a copy; empty if none)."""
        with self._lock:
            _, found = self._rows.get(image_key(path), ("", Decisions()))
            return Decisions(dict(found.verdicts), found.reviewed)

    def set(self, path: Path, decisions: Decisions) -> None:
        """Replace the decisions about ``path`` and write the file before returning.

        Raises:
            OutputError: the file cannot be written (the change is then not kept).
        """
        key = image_key(path)
        with self._lock:
            before = self._rows.get(key)
            if decisions:
                self._rows[key] = (
                    str(path),
                    Decisions(dict(decisions.verdicts), decisions.reviewed),
                )
            else:
                self._rows.pop(key, None)
            try:
                atomic_write_text(self.path, self._text())
            except BaseException:
                if before is None:
                    self._rows.pop(key, None)
                else:
                    self._rows[key] = before
                raise

    def items(self) -> list[tuple[Path, Decisions]]:
        """Every photo with a decision, in file order."""
        with self._lock:
            return [(Path(path), decisions) for path, decisions in self._rows.values()]

    def _text(self) -> str:
        rows = sorted(self._rows.values(), key=lambda item: item[0])
        return "".join(json.dumps(to_row(path, d), ensure_ascii=False) + "\n" for path, d in rows)


def to_row(path: str, decisions: Decisions) -> dict[str, Any]:
    """One line of the file, as ``datasets.load`` reads it."""
    return {
        "path": path,
        "labels": decisions.positives(),
        "negatives": decisions.negatives(),
        "unknown": [] if decisions.reviewed else ALL_OTHER_LABELS,
    }


def _decisions(record: Any) -> tuple[str, Decisions]:
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        raise ValueError('expected an object like {"path": ..., "labels": [...]}')
    labels = _labels(record, "labels")
    negatives = _labels(record, "negatives")
    unknown = record.get("unknown", [])
    if unknown not in (ALL_OTHER_LABELS, []):
        raise ValueError(f'"unknown" must be "{ALL_OTHER_LABELS}" or [], got {unknown!r}')
    verdicts = {label: False for label in negatives}
    verdicts.update((label, True) for label in labels)  # positive over negative, as in load
    return record["path"], Decisions(verdicts, reviewed=unknown == [])


def _labels(record: dict[str, Any], name: str) -> list[str]:
    value = record.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name!r} must be a list of labels")
    return value


def decided(decisions: Decisions, label: str, decision: str) -> Decisions:
    """``decisions`` with ``label`` accepted, rejected or cleared (``ACCEPT``, ``REJECT``,
    ``CLEAR``).

    Raises:
        ValueError: an unknown decision.
    """
    verdicts = dict(decisions.verdicts)
    if decision == ACCEPT:
        verdicts[label] = True
    elif decision == REJECT:
        verdicts[label] = False
    elif decision == CLEAR:
        verdicts.pop(label, None)
    else:
        raise ValueError(f"unknown decision {decision!r} (use {ACCEPT}, {REJECT} or {CLEAR})")
    return Decisions(verdicts, decisions.reviewed)


def reviewed(decisions: Decisions, tags: Iterable[str], done: bool) -> Decisions:
    """``decisions`` marked reviewed (``done``: the model's ``tags`` nobody rejected are
    accepted, every other label is wrong) or not reviewed again."""
    verdicts = dict(decisions.verdicts)
    if done:
        for label in tags:
            verdicts.setdefault(label, True)
    return Decisions(verdicts, done)
