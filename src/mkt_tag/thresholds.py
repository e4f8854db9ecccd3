"""The per-label thresholds file: ``label<TAB>threshold`` lines that ``mkt-tag tag
--thresholds`` reads and ``mkt-tag eval --calibrate`` writes.

Labels are matched case- and space-insensitively (``vocab.normalise``). Only finite numbers
are accepted; a label never to be predicted is written as ``NEVER``.

Thresholds fit one model's scores on one vocabulary, so ``eval`` records both in ``#``
header lines before the first threshold, which ``read_thresholds_file`` parses::

    # model: runs/mine/best
    # model fingerprint: 5d0c...   (the weights and configuration the scores came from)
    # vocabulary: 120 labels, fingerprint 9a41...   (``labels_fingerprint``)

Files without them (written by hand, or by an older mkt-tag) read as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from mkt_tag.errors import LabelFileError
from mkt_tag.files import atomic_write_text, digest, write_error
from mkt_tag.vocab import content_lines, normalise, parse_threshold, read_text

# Written for a label that no threshold serves (never predicted): read_thresholds takes only
# finite numbers, and this one is above every float32 score, so `mkt-tag tag` never picks it.
NEVER = 1e308

_HEADER = {
    "model": re.compile(r"#\s*model:\s*(?P<value>\S.*?)\s*$"),
    "model_fingerprint": re.compile(r"#\s*model fingerprint:\s*(?P<value>[0-9a-f]+)\s*$"),
    "vocabulary": re.compile(
        r"#\s*vocabulary:\s*(?P<size>\d+) labels?, fingerprint (?P<value>[0-9a-f]+)\s*$"
    ),
}


@dataclass
class ThresholdsFile:
    """A thresholds file: its thresholds, and the model and vocabulary they were made for."""

    path: Path
    thresholds: dict[str, float]  # by ``normalise(label)``
    model: str = ""  # the model id given to eval ("": not recorded)
    model_fingerprint: str = ""  # ``Tagger.scores_fingerprint`` of that model ("": unknown)
    vocabulary: str = ""  # ``labels_fingerprint`` of the labels calibrated ("": not recorded)
    vocabulary_size: int = 0  # how many labels that was (0: not recorded)


def labels_fingerprint(labels: Iterable[str]) -> str:
    """A short fingerprint of a label list: order, case and spacing do not count."""
    return digest("labels", sorted({normalise(label) for label in labels}))[:16]


def read_thresholds(path: str | Path) -> dict[str, float]:
    """Per-label thresholds from ``label<TAB>threshold`` lines, keyed by ``normalise(label)``."""
    return read_thresholds_file(path).thresholds


def read_thresholds_file(path: str | Path) -> ThresholdsFile:
    """The thresholds and the header lines of a thresholds file.

    Raises:
        LabelFileError: the file cannot be read, a line is malformed, or it has no threshold.
    """
    path = Path(path)
    text = read_text(path)
    thresholds: dict[str, float] = {}
    for number, line in content_lines(text):
        label, sep, value = line.strip().rpartition("\t")
        if not sep:
            raise LabelFileError(path, f"line {number}: expected 'label<TAB>threshold'")
        threshold = parse_threshold(path, number, value)
        thresholds[normalise(label)] = threshold
    if not thresholds:
        raise LabelFileError(path, "no thresholds (the file is empty or only has comments)")
    found = ThresholdsFile(path, thresholds)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            break  # the header is the comments before the first threshold
        for field, pattern in _HEADER.items():
            match = pattern.match(line)
            if match and match["value"] != "unknown":  # older files: "# model: unknown"
                setattr(found, field, match["value"])
                if field == "vocabulary":
                    found.vocabulary_size = int(match["size"])
    return found


def write_thresholds(
    path: str | Path,
    labels: Sequence[str],
    thresholds: ArrayLike,
    comment: str = "",
    model: str = "",
    model_fingerprint: str = "",
) -> int:
    """Write the file; returns how many labels were written as ``NEVER``.

    Thresholds are written with ``repr`` (round-trip exact: an entry scored exactly at its
    threshold stays a prediction). A label that is never to be predicted (+inf: a target
    precision out of reach, or no positive anywhere) is written as ``NEVER`` (1e308), a
    finite number above every score, since ``read_thresholds`` takes only finite numbers;
    leaving the label out would instead let ``tag`` predict it freely. ``comment`` lines go
    first, as ``#`` lines, then the header lines: ``model`` (the id the scores were made
    with), its ``model_fingerprint`` (``Tagger.scores_fingerprint``) when known, and the
    vocabulary's fingerprint, which ``tag --thresholds`` checks.
    """
    values = np.asarray(thresholds, dtype=np.float64)
    never = ~np.isfinite(values)
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    lines += [f"# model: {' '.join(model.splitlines())}"] if model.strip() else []
    lines += [f"# model fingerprint: {model_fingerprint}"] if model_fingerprint else []
    lines += [
        f"# vocabulary: {len(labels)} labels, fingerprint {labels_fingerprint(labels)}",
        f"# {NEVER!r} = never predicted ({int(never.sum())} labels here)",
        "# label<TAB>threshold: mkt-tag tag --thresholds THIS_FILE",
    ]
    for label, threshold in zip(labels, values, strict=True):
        value = NEVER if not math.isfinite(threshold) else float(threshold)
        lines.append(f"{label}\t{value!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    atomic_write_text(path, "\n".join(lines) + "\n")
    return int(never.sum())
