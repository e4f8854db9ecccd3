"""The per-label thresholds file: ``label<TAB>threshold`` lines that ``mkt-tag tag
--thresholds`` reads and ``mkt-tag eval --calibrate`` writes.

Labels are matched case- and space-insensitively (``vocab.normalise``). Only finite numbers
are accepted; a label never to be predicted is written as ``NEVER``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from mkt_tag.errors import LabelFileError
from mkt_tag.files import atomic_write_text, write_error
from mkt_tag.vocab import content_lines, normalise, parse_threshold, read_text

# Written for a label that no threshold serves (never predicted): read_thresholds takes only
# finite numbers, and this one is above every float32 score, so `mkt-tag tag` never picks it.
NEVER = 1e308


def read_thresholds(path: str | Path) -> dict[str, float]:
    """Per-label thresholds from ``label<TAB>threshold`` lines, keyed by ``normalise(label)``."""
    path = Path(path)
    thresholds: dict[str, float] = {}
    for number, line in content_lines(read_text(path)):
        label, sep, value = line.strip().rpartition("\t")
        if not sep:
            raise LabelFileError(path, f"line {number}: expected 'label<TAB>threshold'")
        threshold = parse_threshold(path, number, value)
        thresholds[normalise(label)] = threshold
    if not thresholds:
        raise LabelFileError(path, "no thresholds (the file is empty or only has comments)")
    return thresholds


def write_thresholds(
    path: str | Path, labels: Sequence[str], thresholds: ArrayLike, comment: str = ""
) -> int:
    """Write the file; returns how many labels were written as ``NEVER``.

    Thresholds are written with ``repr`` (round-trip exact: an entry scored exactly at its
    threshold stays a prediction). A label that is never to be predicted (+inf: a target
    precision out of reach, or no positive anywhere) is written as ``NEVER`` (1e308), a
    finite number above every score, since ``read_thresholds`` takes only finite numbers;
    leaving the label out would instead let ``tag`` predict it freely. ``comment`` lines go
    first, as ``#`` lines.
    """
    values = np.asarray(thresholds, dtype=np.float64)
    never = ~np.isfinite(values)
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    lines += [
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
