"""Per-label score thresholds chosen on labelled data: maximise F1, or reach a precision.

MKT scores rank labels within an image but are not calibrated probabilities (see
docs/metrics.md), so a tagger that thresholds needs one threshold per label. Pure numpy,
on the same sorted keys as ``metrics.average_precision``: no loop per label or per image.

A threshold t predicts every entry with ``score >= t``. Candidates are the distinct
scores of positive entries (a threshold at a negative's score only adds a false positive
to the candidate above it); ignored (0) entries take no part. Rules:

- Default (``target_precision=None``): the candidate with the highest
  F1 = 2 TP / (predicted + positives); ties go to the higher threshold (fewer predictions).
- ``target_precision=p``: the lowest candidate with precision >= p, i.e. the most recall
  at that precision. When no candidate reaches p the threshold is +inf: the label is never
  predicted (status ``"unreachable"``).
- Fallback: a label with fewer than ``min_positives`` positives (at least 1) gets the
  pooled threshold, found by the same rule on all labels' entries pooled (micro counts),
  i.e. the best single global threshold (status ``"fallback"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# the ranking machinery is shared with metrics.py: one tie rule, one float32 rule
from mkt_tag.metrics import (
    _block,
    _checked,
    _chunks,
    _key_scores,
    _operating_points,
    _ranked_chunks,
    _ratio,
    threshold_prf,
)

__all__ = ["Calibration", "calibrate_thresholds", "pooled_threshold"]

MIN_POSITIVES = 5  # default: fewer positives than this and one label's F1 optimum is noise


@dataclass(frozen=True)
class Calibration:
    """Per-label thresholds and how each does on the data it was chosen on."""

    thresholds: NDArray[np.float64]  # predict when score >= threshold; +inf: never
    precision: NDArray[np.float64]  # on the calibration data at that threshold (NaN: undefined)
    recall: NDArray[np.float64]
    f1: NDArray[np.float64]
    n_positives: NDArray[np.int64]  # +1 entries per label
    status: NDArray[np.str_]  # "calibrated", "fallback" (too few positives), "unreachable"
    pooled_threshold: float  # the fallback threshold; NaN when no label needed it


def calibrate_thresholds(
    scores: ArrayLike,
    targets: ArrayLike,
    *,
    target_precision: float | None = None,
    min_positives: int = MIN_POSITIVES,
) -> Calibration:
    """One threshold per label (column), chosen on labelled data; rules in the module notes.

    Args:
        scores: N x C scores.
        targets: N x C integers, +1 positive, -1 negative, 0 ignored.
        target_precision: None to maximise F1; else the precision to reach, in (0, 1].
        min_positives: labels with fewer positives use the pooled threshold (at least 1:
            a label without positives has nothing to calibrate on).

    Returns:
        ``Calibration`` with one entry per label. Precision, recall and F1 are measured on
        the same data (optimistic); check them on held-out data with ``threshold_prf``.
    """
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ValueError(f"target precision must lie in (0, 1], got {target_precision}")
    score_array, target_array, columns = _checked(scores, targets, None)
    n_labels = len(columns)
    thresholds = np.full(n_labels, np.inf)
    true_positives = np.zeros(n_labels, dtype=np.int64)
    predicted = np.zeros(n_labels, dtype=np.int64)
    n_positives = np.zeros(n_labels, dtype=np.int64)
    reached = np.zeros(n_labels, dtype=bool)
    for part, keys in _ranked_chunks(score_array, target_array, columns):
        if keys.shape[1] == 0:  # no image: nothing to calibrate on, every label falls back
            continue
        hits, counts, reachable = _operating_points(keys)
        # a group of tied scores ends with its positives: the key's bit 0 says "has one"
        at_positive = reachable & (keys & np.uint64(1)).astype(bool)
        label_positives = hits[:, -1]
        best, found = _best_points(hits, counts, at_positive, label_positives, target_precision)
        rows = np.arange(len(keys))
        thresholds[part] = np.where(found, _key_scores(keys[rows, best]), np.inf)
        true_positives[part] = np.where(found, hits[rows, best], 0)
        predicted[part] = np.where(found, counts[rows, best], 0)
        n_positives[part] = label_positives
        reached[part] = found
    fallback = n_positives < max(1, min_positives)
    pooled = float("nan")
    if fallback.any():
        pooled = pooled_threshold(score_array, target_array, target_precision=target_precision)
        thresholds[fallback] = pooled
        at_pooled = threshold_prf(score_array, target_array, pooled, labels=fallback)
        true_positives[fallback] = at_pooled.true_positives
        predicted[fallback] = at_pooled.predicted
    status = np.where(reached, "calibrated", "unreachable")
    status[fallback] = "fallback"
    return Calibration(
        thresholds=thresholds,
        precision=_ratio(true_positives, predicted),
        recall=_ratio(true_positives, n_positives),
        f1=_ratio(2 * true_positives, predicted + n_positives),
        n_positives=n_positives,
        status=status.astype(np.str_),
        pooled_threshold=pooled,
    )


def _best_points(
    hits: NDArray[np.int64],
    counts: NDArray[np.int64],
    candidate: NDArray[np.bool_],
    positives: NDArray[np.int64],
    target_precision: float | None,
) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Per row, the chosen position among ``candidate`` ones and whether there was one.

    Rows are labels (or one pooled row), positions run from the highest threshold down;
    ``hits``/``counts`` are TP and #predicted when predicting down to each position.
    Candidates are the thresholds at positive scores: a threshold at a negative's score
    only adds a false positive to the candidate above it.
    """
    if target_precision is None:
        f1 = np.where(candidate, 2 * hits / (counts + positives[:, None]), -1.0)
        best = np.argmax(f1, axis=1)  # first maximum: the highest threshold
    else:
        # hits / counts is correctly rounded, so 9/10 >= 0.9 holds; counts >= 1 everywhere
        candidate = candidate & (hits / counts >= target_precision)
        best = candidate.shape[1] - 1 - np.argmax(candidate[:, ::-1], axis=1)  # the lowest
    return best, np.asarray(candidate.any(axis=1))


def pooled_threshold(
    scores: ArrayLike, targets: ArrayLike, *, target_precision: float | None = None
) -> float:
    """The single threshold for all labels pooled: maximal micro F1 (ties: the higher), or
    the lowest reaching ``target_precision``. +inf when no positive exists or the target
    is out of reach. Candidates are the distinct positive scores; entries at or above each
    are counted chunk by chunk, so memory stays small.
    """
    score_array, target_array, _ = _checked(scores, targets, None)
    n_images, n_labels = score_array.shape
    candidates: list[NDArray[Any]] = []
    for rows in _chunks(n_images, 16 * max(1, n_labels)):
        block, block_targets = _block(score_array[rows], target_array[rows])
        candidates.append(np.unique(block[block_targets == 1]))
    thresholds = np.unique(np.concatenate(candidates)) if candidates else np.zeros(0)
    if thresholds.size == 0:
        return float("inf")
    # counts at each candidate threshold (ascending), summed over chunks of sorted scores
    labelled_at = np.zeros(thresholds.size, dtype=np.int64)
    positives_at = np.zeros(thresholds.size, dtype=np.int64)
    for rows in _chunks(n_images, 16 * max(1, n_labels)):
        block, block_targets = _block(score_array[rows], target_array[rows])
        labelled = np.sort(block[block_targets != 0])
        positive = np.sort(block[block_targets == 1])
        labelled_at += labelled.size - np.searchsorted(labelled, thresholds, side="left")
        positives_at += positive.size - np.searchsorted(positive, thresholds, side="left")
    # reversed so that positions run from the highest threshold down, as in _operating_points
    hits, counts = positives_at[::-1], labelled_at[::-1]
    best, found = _best_points(
        hits[None, :],
        counts[None, :],
        np.ones((1, thresholds.size), dtype=bool),
        positives_at[:1],  # the lowest candidate predicts every positive
        target_precision,
    )
    return float(thresholds[::-1][best[0]]) if found[0] else float("inf")
