"""Multi-label ranking metrics: per-label AP, mAP, precision/recall/F1 at top-K and at thresholds.

Pure numpy functions. ``scores`` is an N x C matrix (N images, C labels); ``targets`` is an
integer N x C matrix with NUS-WIDE semantics: +1 positive, -1 negative, 0 ignored (unknown).
Every function takes ``labels`` to restrict it to a subset of the C columns (ZSL: the unseen
labels, GZSL: all, seen: the seen ones), as column indices or a boolean mask of length C.

Rules shared by every function (docs/metrics.md has the formulas and a worked example):

- Scores are compared as float32 (the model's precision): float64 input is rounded once, so
  values equal in float32 are ties. NaN scores are rejected (``ValueError``).
- Ties never help: tied scores are ordered pessimistically, negatives (and, for top-K,
  ignored entries) before positives, so results do not depend on the order of images or
  labels. At a threshold, tied scores are all on the same side (``score >= threshold``).
- Undefined ratios are NaN: precision without predictions, recall without positives.

Work is done in chunks of labels or images so that the NUS-WIDE test set (107,859 x 1,006)
stays well under 1 GB of temporaries; see ``bench/metrics_speed.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mkt_tag.evaluate.ranking import (
    Labels,
    checked_arrays,
    chunk_slices,
    key_scores,
    operating_points,
    ranked_chunks,
    ranked_keys,
    ratio,
    score_block,
)

__all__ = [
    "PRF",
    "LabelAP",
    "LabelPRF",
    "PRCurve",
    "average_precision",
    "mean_average_precision",
    "precision_recall_curve",
    "threshold_prf",
    "top_k_prf",
]


@dataclass(frozen=True)
class PRF:
    """Micro precision, recall and F1 with the counts they come from.

    precision = TP / predicted, recall = TP / positives, F1 = 2PR / (P + R), computed as
    2 TP / (predicted + positives) so that it is 0 (not undefined) when TP = 0.
    """

    true_positives: int  # predictions that hit a +1 entry
    predicted: int  # predictions counted in the precision's denominator
    positives: int  # +1 entries

    @property
    def precision(self) -> float:
        return float(ratio(self.true_positives, self.predicted))

    @property
    def recall(self) -> float:
        return float(ratio(self.true_positives, self.positives))

    @property
    def f1(self) -> float:
        return float(ratio(2 * self.true_positives, self.predicted + self.positives))


@dataclass(frozen=True)
class LabelPRF:
    """Per-label counts at a threshold; ``micro()`` pools them, the properties do not."""

    true_positives: NDArray[np.int64]  # per label: labelled predictions that are +1
    predicted: NDArray[np.int64]  # per label: labelled (+1/-1) entries with score >= threshold
    positives: NDArray[np.int64]  # per label: +1 entries

    @property
    def precision(self) -> NDArray[np.float64]:
        return ratio(self.true_positives, self.predicted)

    @property
    def recall(self) -> NDArray[np.float64]:
        return ratio(self.true_positives, self.positives)

    @property
    def f1(self) -> NDArray[np.float64]:
        return ratio(2 * self.true_positives, self.predicted + self.positives)

    def micro(self) -> PRF:
        """All labels pooled: counts summed over labels, then P, R, F1."""
        return PRF(
            int(self.true_positives.sum()), int(self.predicted.sum()), int(self.positives.sum())
        )


@dataclass(frozen=True)
class LabelAP:
    """Average precision per label."""

    ap: NDArray[np.float64]  # per label; NaN where the label has no +1 entry
    n_positives: NDArray[np.int64]  # per label: +1 entries


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall of one label at each distinct labelled score, highest first."""

    thresholds: NDArray[np.float64]  # predict when score >= threshold; descending
    precision: NDArray[np.float64]
    recall: NDArray[np.float64]  # NaN everywhere when the label has no positive
    n_positives: int


# --- average precision ------------------------------------------------------------------


def average_precision(scores: ArrayLike, targets: ArrayLike, *, labels: Labels = None) -> LabelAP:
    """Average precision of each label, NUS-WIDE semantics (the reference's per-label AP).

    For label c, only entries with target +1 or -1 take part. They are sorted by score,
    highest first; with r_i the rank (1-based) of the i-th positive and P_c the number of
    positives::

        AP_c = (1 / P_c) * sum_{i=1..P_c} i / r_i      (precision at each positive's rank)

    Ties rank negatives before positives, so a tie never raises AP: a constant score gives
    the lowest AP any order of the tied entries could give. AP_c is NaN when P_c = 0.

    Args:
        scores: N x C scores, higher = more likely.
        targets: N x C integers, +1 positive, -1 negative, 0 ignored.
        labels: columns to evaluate (indices or boolean mask); default all.

    Returns:
        ``LabelAP`` with one entry per selected label, in selection order.
    """
    score_array, target_array, columns = checked_arrays(scores, targets, labels)
    ap = np.full(len(columns), np.nan)
    n_positives = np.zeros(len(columns), dtype=np.int64)
    for part, keys in ranked_chunks(score_array, target_array, columns):
        label_of, rank = np.nonzero(keys & np.uint64(1))  # positives, in rank order per label
        counts = np.bincount(label_of, minlength=keys.shape[0])
        first = np.cumsum(counts) - counts  # index of each label's first positive
        hits = np.arange(1, len(label_of) + 1) - first[label_of]  # i: positives so far
        sums = np.bincount(label_of, weights=hits / (rank + 1), minlength=keys.shape[0])
        ap[part] = ratio(sums, counts)
        n_positives[part] = counts
    return LabelAP(ap=ap, n_positives=n_positives)


def mean_average_precision(ap: ArrayLike, *, reference: bool = False) -> float:
    """mAP from per-label AP (``average_precision(...).ap``, or a subset of it).

    Default: the mean over labels with at least one positive (AP not NaN)::

        mAP = sum_{c : P_c > 0} AP_c / |{c : P_c > 0}|

    ``reference=True``: the reference (BiAM/MKT) code's mean, where a label without
    positives counts as AP 0 and the sum is divided by all labels, C. It is lower by the
    share of empty labels; use it only to compare with published numbers.
    NaN when there is no label to average (no label, or none with a positive by default).
    """
    values = np.asarray(ap, dtype=np.float64)
    if reference:
        return float(np.nan_to_num(values, nan=0.0).mean()) if values.size else float("nan")
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


# --- precision, recall, F1 --------------------------------------------------------------


def top_k_prf(
    scores: ArrayLike, targets: ArrayLike, ks: Iterable[int] = (3, 5), *, labels: Labels = None
) -> dict[int, PRF]:
    """Micro precision, recall and F1 of each image's top-K labels (the paper's F1@K).

    Each of the N images predicts the K labels with the highest scores::

        P = TP / (N * K)      R = TP / #(+1 entries)      F1 = 2PR / (P + R)

    TP counts predictions on +1 entries. As in the reference, every prediction counts in
    P's denominator, even one on an ignored (0) entry, and images without a positive stay
    in. K larger than the number of selected labels C is clamped to C (every label is
    predicted). Ties at the K-th score are broken pessimistically: non-positives first.

    Returns:
        ``{K: PRF}`` for each requested K (keys as requested, before clamping).
    """
    score_array, target_array, columns = checked_arrays(scores, targets, labels)
    requested = [int(k) for k in ks]
    if any(k < 1 for k in requested):
        raise ValueError(f"K must be at least 1, got {requested}")
    n_images, n_labels = score_array.shape[0], len(columns)
    clamped = {k: min(k, n_labels) for k in requested}
    wanted = sorted({k for k in clamped.values() if k > 0})
    true_positives = dict.fromkeys(wanted, 0)
    positives = 0
    for rows in chunk_slices(n_images if wanted else 0, 16 * max(1, n_labels)):  # none: no label
        if labels is None:  # no copy of the columns
            block, block_targets = score_block(score_array[rows], target_array[rows])
        else:
            block, block_targets = score_block(
                score_array[rows][:, columns], target_array[rows][:, columns]
            )
        positive = block_targets == 1
        positives += int(np.count_nonzero(positive))
        kth_values = np.partition(block, [n_labels - k for k in wanted], axis=1)
        for k in wanted:
            kth = kth_values[:, n_labels - k, None]
            above = block > kth
            tied = block == kth
            n_above = np.count_nonzero(above, axis=1)
            hits_above = np.count_nonzero(above & positive, axis=1)
            n_tied = np.count_nonzero(tied, axis=1)
            hits_tied = np.count_nonzero(tied & positive, axis=1)
            # the K - n_above free slots go to tied non-positives first
            hits_in_tie = np.maximum(0, k - n_above - (n_tied - hits_tied))
            true_positives[k] += int(hits_above.sum() + hits_in_tie.sum())
    return {
        k: PRF(true_positives.get(clamped[k], 0), n_images * clamped[k], positives)
        for k in requested
    }


def threshold_prf(
    scores: ArrayLike,
    targets: ArrayLike,
    thresholds: float | ArrayLike,
    *,
    labels: Labels = None,
) -> LabelPRF:
    """Precision, recall and F1 per label when every ``score >= threshold`` is a prediction.

    ``thresholds`` is one number for all labels or an array of length C (all score columns;
    ``labels`` selects from it like from the scores). Unlike top-K, only labelled entries
    count, as in AP: for label c, TP_c = #(+1 with score >= t_c), predicted_c =
    #(+1 or -1 with score >= t_c), positives_c = #(+1). ``.micro()`` pools the counts::

        P = sum TP_c / sum predicted_c      R = sum TP_c / sum positives_c

    Scores are float32 (see the module notes); thresholds are compared exactly, without
    rounding them.
    """
    score_array, target_array, columns = checked_arrays(scores, targets, labels)
    limits = np.asarray(thresholds, dtype=np.float64)
    if limits.ndim == 1:
        if limits.shape != (score_array.shape[1],):
            raise ValueError(
                f"{limits.size} thresholds for {score_array.shape[1]} labels: give one per "
                f"score column, or a single number"
            )
        limits = limits[columns]
    elif limits.ndim != 0:
        raise ValueError("thresholds must be a number or a 1-D array")
    if np.isnan(limits).any():
        raise ValueError("thresholds contain NaN")
    true_positives = np.zeros(len(columns), dtype=np.int64)
    predicted = np.zeros(len(columns), dtype=np.int64)
    positives = np.zeros(len(columns), dtype=np.int64)
    for rows in chunk_slices(score_array.shape[0], 16 * max(1, len(columns))):
        block, block_targets = score_block(
            score_array[rows][:, columns], target_array[rows][:, columns]
        )
        hit = block >= limits
        positive = block_targets == 1
        true_positives += np.count_nonzero(hit & positive, axis=0)
        predicted += np.count_nonzero(hit & (block_targets != 0), axis=0)
        positives += np.count_nonzero(positive, axis=0)
    return LabelPRF(true_positives, predicted, positives)


def precision_recall_curve(scores: ArrayLike, targets: ArrayLike) -> PRCurve:
    """Precision-recall curve of one label (1-D ``scores`` and ``targets`` over images).

    One point per distinct score among labelled entries, highest first: predicting every
    labelled entry with ``score >= threshold`` gives that precision and recall (tied
    entries enter together). Ignored entries are left out.
    """
    score_column, target_column = np.asarray(scores), np.asarray(targets)
    if score_column.ndim != 1 or target_column.shape != score_column.shape:
        raise ValueError(
            f"one label's scores and targets must be 1-D of one length, "
            f"got {score_column.shape} and {target_column.shape}"
        )
    checked_arrays(score_column[:, None], target_column[:, None], None)
    keys = ranked_keys(*score_block(score_column[None, :], target_column[None, :]))
    true_positives, predicted, reachable = operating_points(keys)
    n_positives = int(true_positives[0, -1]) if keys.size else 0
    return PRCurve(
        thresholds=key_scores(keys[reachable]),
        precision=ratio(true_positives[reachable], predicted[reachable]),
        recall=ratio(true_positives[reachable], n_positives),
        n_positives=n_positives,
    )
