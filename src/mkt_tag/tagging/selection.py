"""Which labels become an image's tags: the best ``top_k`` that pass their threshold.

A label with a threshold of its own (the vocabulary's ``threshold`` column, a thresholds
file) or the global ``threshold`` is a tag when its score reaches it. A label with no
threshold at all, in a run where other labels have theirs, keeps the rule of a run without
thresholds: it is a tag only when among the image's ``top_k`` (default 5) best labels. So a
thresholds file that covers only some labels never floods every image with the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mkt_tag.errors import LabelFileError
from mkt_tag.files import digest
from mkt_tag.results import Tag
from mkt_tag.thresholds import labels_fingerprint, read_thresholds_file
from mkt_tag.vocab import Vocabulary, normalise

DEFAULT_TOP_K = 5  # tags per image when no threshold is given
FORCE_THRESHOLDS = "--force-thresholds"  # the `tag` option that accepts another model's file


@dataclass
class Selection:
    """Which labels become tags: the ``top_k`` best that pass their threshold."""

    top_k: int | None = 5  # at most this many tags per image (None: no limit)
    threshold: float | None = None  # global minimum score (None: none)
    thresholds: dict[str, float] | None = None  # per-label minimum, keyed by normalised label
    # With per-label thresholds and no global one: a label without a threshold is a tag only
    # when among an image's this many best labels (None: whenever, as a label at -inf).
    top_k_without_threshold: int | None = DEFAULT_TOP_K

    def describe(self) -> str:
        """The rule in words, e.g. "top 5, score >= 0.3"; exact enough to tell two
        selections apart (per-label thresholds by a fingerprint)."""
        parts = [f"top {self.top_k}"] if self.top_k is not None else []
        if self.threshold is not None:
            parts.append(f"score >= {self.threshold!r}")
        if self.thresholds:
            fingerprint = digest("thresholds", sorted(self.thresholds.items()))[:12]
            parts.append(f"{len(self.thresholds)} per-label thresholds ({fingerprint})")
            if self._ranks_labels_without_threshold():
                parts.append(f"labels without one: top {self.top_k_without_threshold}")
        return ", ".join(parts) or "every label"

    def _ranks_labels_without_threshold(self) -> bool:
        return (
            bool(self.thresholds)
            and self.threshold is None
            and (self.top_k_without_threshold is not None)
        )

    def minimum(self, labels: Sequence[str]) -> np.ndarray:
        """The threshold of each label (-inf where none applies)."""
        default = -np.inf if self.threshold is None else self.threshold
        per_label = self.thresholds or {}
        return np.array(
            [per_label.get(normalise(lab), default) for lab in labels], dtype=np.float64
        )

    def ranked_only(self, labels: Sequence[str]) -> np.ndarray:
        """Which labels follow the rank rule (``top_k_without_threshold``) instead."""
        if not self.thresholds or not self._ranks_labels_without_threshold():
            return np.zeros(len(labels), dtype=bool)
        per_label = self.thresholds
        return np.array([normalise(lab) not in per_label for lab in labels], dtype=bool)


def select(scores: np.ndarray, labels: Sequence[str], selection: Selection) -> list[list[Tag]]:
    """Tags per image, best first; equal scores keep label-file order (deterministic)."""
    minimum = selection.minimum(labels)
    ranked_only = selection.ranked_only(labels)
    limit = selection.top_k_without_threshold or 0
    order = np.argsort(-scores, axis=1, kind="stable")
    tags = []
    for row, ranked in zip(scores, order, strict=True):
        kept = [
            int(i)
            for rank, i in enumerate(ranked)
            if row[i] >= minimum[i] and not (ranked_only[i] and rank >= limit)
        ]
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
    ``thresholds_file``; its labels that are not in the vocabulary are ignored (noted), a
    file calibrated on another label list is noted, and so are the vocabulary's labels it
    has no threshold for (they follow the rank rule, or ``threshold`` when given). Without
    any threshold, ``top_k`` defaults to ``DEFAULT_TOP_K``. The model a file was made for
    is checked by ``check_thresholds_model``, once the model is loaded.

    Raises:
        LabelFileError: the thresholds file cannot be read.
    """
    notes = []
    recorded = read_thresholds_file(thresholds_file) if thresholds_file is not None else None
    from_file = recorded.thresholds if recorded else {}
    per_label = {**vocabulary.thresholds, **from_file} or None
    labels = vocabulary.labels
    if recorded and recorded.vocabulary and recorded.vocabulary != labels_fingerprint(labels):
        notes.append(
            f"{thresholds_file}: calibrated on another vocabulary ({recorded.vocabulary_size} "
            f"labels; {vocabulary.source} has {len(labels)}): its thresholds may no longer "
            "fit the scores, calibrate again on this one (mkt-tag eval --calibrate)"
        )
    unknown = sorted(set(from_file) - {normalise(label) for label in labels})
    if unknown:
        notes.append(
            f"{thresholds_file}: {len(unknown)} label(s) not in {vocabulary.source} ignored, "
            f"e.g. {unknown[0]!r}"
        )
    if top_k is None and threshold is None and per_label is None:
        top_k = DEFAULT_TOP_K
    rank_limit = top_k or DEFAULT_TOP_K
    uncovered = [label for label in labels if normalise(label) not in (per_label or {})]
    if recorded and uncovered:
        rule = (
            f"they use --threshold {threshold}"
            if threshold is not None
            else f"they are tags only when among an image's {rank_limit} best labels"
        )
        notes.append(
            f"{thresholds_file}: no threshold for {len(uncovered)} of {len(labels)} labels of "
            f"{vocabulary.source} (e.g. {uncovered[0]!r}): {rule}"
        )
    return Selection(top_k, threshold, per_label, rank_limit), notes


def check_thresholds_model(
    thresholds_file: str | Path, model: str, fingerprint: str, force: bool = False
) -> list[str]:
    """Check that a thresholds file was made for the model in use; notes for the user.

    ``model`` is the id in use, ``fingerprint`` its ``Tagger.scores_fingerprint``. A file
    whose recorded fingerprint differs was calibrated on another model's scores (other
    weights, configuration or ``--streams``): its thresholds would give wrong tags, so it is
    refused unless ``force`` (then one note). Without fingerprints on both sides only the
    names can be compared: a different name is a note, as it may be the same model. A file
    that records no model (written by hand) is not checked.

    Raises:
        LabelFileError: the file cannot be read, or it was made for another model.
    """
    recorded = read_thresholds_file(thresholds_file)
    if recorded.model_fingerprint and fingerprint:
        if recorded.model_fingerprint == fingerprint:
            return []
        other = f"another model ({recorded.model})" if recorded.model else "another model"
        if not force:
            raise LabelFileError(
                thresholds_file,
                f"calibrated for {other}, not for {model}: its thresholds do not fit these "
                f"scores. Calibrate again (mkt-tag eval --calibrate ... --model {model}), or "
                f"pass {FORCE_THRESHOLDS} to use them anyway",
            )
        return [f"{thresholds_file}: calibrated for {other}, used for {model} ({FORCE_THRESHOLDS})"]
    if recorded.model and recorded.model != model:
        return [
            f"{thresholds_file}: calibrated for model {recorded.model}, this run uses {model}: "
            "if that is another model, calibrate again for it (mkt-tag eval --calibrate)"
        ]
    return []
