"""Which labels become an image's tags: the best ``top_k`` that pass their threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mkt_tag.results import Tag
from mkt_tag.thresholds import read_thresholds
from mkt_tag.vocab import Vocabulary, normalise

DEFAULT_TOP_K = 5  # tags per image when no threshold is given


@dataclass
class Selection:
    """Which labels become tags: the ``top_k`` best that pass their threshold."""

    top_k: int | None = 5  # at most this many tags per image (None: no limit)
    threshold: float | None = None  # global minimum score (None: none)
    thresholds: dict[str, float] | None = None  # per-label minimum, keyed by normalised label

    def minimum(self, labels: Sequence[str]) -> np.ndarray:
        """The threshold of each label (-inf where none applies)."""
        default = -np.inf if self.threshold is None else self.threshold
        per_label = self.thresholds or {}
        return np.array(
            [per_label.get(normalise(lab), default) for lab in labels], dtype=np.float64
        )


def select(scores: np.ndarray, labels: Sequence[str], selection: Selection) -> list[list[Tag]]:
    """Tags per image, best first; equal scores keep label-file order (deterministic)."""
    minimum = selection.minimum(labels)
    order = np.argsort(-scores, axis=1, kind="stable")
    tags = []
    for row, ranked in zip(scores, order, strict=True):
        kept = [int(i) for i in ranked if row[i] >= minimum[i]]
        if selection.top_k is not None:
            kept = kept[: selection.top_k]
        tags.append([Tag(labels[i], round(float(row[i]), 6)) for i in kept])
    return tags


def selection_for(
    vocabulary: Vocabulary,
    top_k: int | None = None,
    threshold: float | None = None,
    thresholds_file: str | Path | None = None,
) -> tuple[Selection, list[str]]:
    """The selection of a ``mkt-tag tag`` run, and notes for the user (one line each).

    Per-label thresholds come from the vocabulary's ``threshold`` column, overridden by
    ``thresholds_file``; its labels that are not in the vocabulary are ignored (noted).
    Without any threshold, ``top_k`` defaults to ``DEFAULT_TOP_K``.

    Raises:
        LabelFileError: the thresholds file cannot be read.
    """
    notes = []
    from_file = read_thresholds(thresholds_file) if thresholds_file is not None else {}
    per_label = {**vocabulary.thresholds, **from_file} or None
    unknown = sorted(set(from_file) - {normalise(label) for label in vocabulary.labels})
    if unknown:
        notes.append(
            f"{thresholds_file}: {len(unknown)} label(s) not in {vocabulary.source} ignored, "
            f"e.g. {unknown[0]!r}"
        )
    if top_k is None and threshold is None and per_label is None:
        top_k = DEFAULT_TOP_K
    return Selection(top_k=top_k, threshold=threshold, thresholds=per_label), notes
