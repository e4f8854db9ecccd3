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

``check_calibration`` chooses thresholds on one part of the images (a seeded split) and
measures them on the other, against the best global threshold and top-K;
``write_calibration`` writes them for ``mkt-tag tag --thresholds`` (``thresholds.py``).

Thresholds are chosen on ``ScoreSet.scores``, fused over the whole vocabulary: the very
scores ``mkt-tag tag`` compares them with, since it scores every label of its vocabulary
together (not on the per-row fusion of the ZSL and seen rows, ``ScoreSet.row_scores``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mkt_tag.datasets import seeded_split
from mkt_tag.evaluate.metrics import PRF, threshold_prf, top_k_prf
from mkt_tag.evaluate.ranking import (
    checked_arrays,
    chunk_slices,
    key_scores,
    operating_points,
    ranked_chunks,
    ratio,
    score_block,
)
from mkt_tag.evaluate.report import DEFAULT_KS, json_number, prf_json
from mkt_tag.evaluate.scores import ScoreSet
from mkt_tag.thresholds import write_thresholds

MIN_POSITIVES = 5  # default: fewer positives than this and one label's F1 optimum is noise
SPLIT_SEED = 0  # the calibration / held-out split is the same on every run


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
    score_array, target_array, columns = checked_arrays(scores, targets, None)
    n_labels = len(columns)
    thresholds = np.full(n_labels, np.inf)
    true_positives = np.zeros(n_labels, dtype=np.int64)
    predicted = np.zeros(n_labels, dtype=np.int64)
    n_positives = np.zeros(n_labels, dtype=np.int64)
    reached = np.zeros(n_labels, dtype=bool)
    for part, keys in ranked_chunks(score_array, target_array, columns):
        if keys.shape[1] == 0:  # no image: nothing to calibrate on, every label falls back
            continue
        hits, counts, reachable = operating_points(keys)
        # a group of tied scores ends with its positives: the key's bit 0 says "has one"
        at_positive = reachable & (keys & np.uint64(1)).astype(bool)
        label_positives = hits[:, -1]
        best, found = _best_points(hits, counts, at_positive, label_positives, target_precision)
        rows = np.arange(len(keys))
        thresholds[part] = np.where(found, key_scores(keys[rows, best]), np.inf)
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
        precision=ratio(true_positives, predicted),
        recall=ratio(true_positives, n_positives),
        f1=ratio(2 * true_positives, predicted + n_positives),
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
    score_array, target_array, _ = checked_arrays(scores, targets, None)
    n_images, n_labels = score_array.shape
    candidates: list[NDArray[Any]] = []
    for rows in chunk_slices(n_images, 16 * max(1, n_labels)):
        block, block_targets = score_block(score_array[rows], target_array[rows])
        candidates.append(np.unique(block[block_targets == 1]))
    thresholds = np.unique(np.concatenate(candidates)) if candidates else np.zeros(0)
    if thresholds.size == 0:
        return float("inf")
    # counts at each candidate threshold (ascending), summed over chunks of sorted scores
    labelled_at = np.zeros(thresholds.size, dtype=np.int64)
    positives_at = np.zeros(thresholds.size, dtype=np.int64)
    for rows in chunk_slices(n_images, 16 * max(1, n_labels)):
        block, block_targets = score_block(score_array[rows], target_array[rows])
        labelled = np.sort(block[block_targets != 0])
        positive = np.sort(block[block_targets == 1])
        labelled_at += labelled.size - np.searchsorted(labelled, thresholds, side="left")
        positives_at += positive.size - np.searchsorted(positive, thresholds, side="left")
    # reversed so that positions run from the highest threshold down, as in operating_points
    hits, counts = positives_at[::-1], labelled_at[::-1]
    best, found = _best_points(
        hits[None, :],
        counts[None, :],
        np.ones((1, thresholds.size), dtype=bool),
        positives_at[:1],  # the lowest candidate predicts every positive
        target_precision,
    )
    return float(thresholds[::-1][best[0]]) if found[0] else float("inf")


# --- what calibration changes on held-out images, and its file -----------------------


@dataclass
class HeldOutCheck:
    """Micro P/R/F1 on held-out images of three ways to pick tags, all chosen on the others.

    Thresholds count labelled (+1/-1) entries only; top-K counts every prediction, as the
    paper's F1@K does (``metrics.threshold_prf`` and ``metrics.top_k_prf``).
    """

    calibration_images: int  # images the thresholds were chosen on
    held_out_images: int  # images they are measured on
    per_label: PRF  # one calibrated threshold per label
    global_threshold: float  # the best single threshold for all labels (+inf: none works)
    global_: PRF  # that threshold for every label
    top_k: dict[int, PRF]  # each image's K best labels, no threshold
    seed: int = SPLIT_SEED  # of the split

    def to_json(self) -> dict[str, Any]:
        return {
            "split_seed": self.seed,
            "calibration_images": self.calibration_images,
            "held_out_images": self.held_out_images,
            "per_label_thresholds": prf_json(self.per_label),
            "global_threshold": json_number(self.global_threshold),
            "at_global_threshold": prf_json(self.global_),
            "top_k": {str(k): prf_json(prf) for k, prf in self.top_k.items()},
        }


def check_calibration(
    scores: ScoreSet,
    held_out: float = 0.5,
    target_precision: float | None = None,
    min_positives: int = MIN_POSITIVES,
    ks: Sequence[int] = DEFAULT_KS,
    seed: int = SPLIT_SEED,
) -> HeldOutCheck:
    """What per-label calibration changes on images it did not see.

    The images are split (seeded); per-label thresholds and the best global threshold are
    chosen on one part by the same rule (F1, or ``target_precision``),
    and all three selections (per-label, global, top-K) are measured on the other part.

    Raises:
        ValueError: too few images for the split.
    """
    calibration_rows, held_rows = seeded_split(len(scores), held_out, seed)
    # the fused scores over all labels only, as ``tag`` sees them: no stream scores copied
    fit = scores.subset(calibration_rows, streams=False)
    test = scores.subset(held_rows, streams=False)
    chosen = calibrate_thresholds(
        fit.scores, fit.targets, target_precision=target_precision, min_positives=min_positives
    )
    best_global = pooled_threshold(fit.scores, fit.targets, target_precision=target_precision)
    return HeldOutCheck(
        calibration_images=len(fit),
        held_out_images=len(test),
        per_label=threshold_prf(test.scores, test.targets, chosen.thresholds).micro(),
        global_threshold=best_global,
        global_=threshold_prf(test.scores, test.targets, best_global).micro(),
        top_k=top_k_prf(test.scores, test.targets, list(dict.fromkeys(ks))),
        seed=seed,
    )


@dataclass
class ThresholdsWritten:
    """What ``write_thresholds`` wrote, for the summary line (labels by calibration status)."""

    calibrated: int  # labels with their own threshold
    unreachable: int  # labels whose own scores cannot reach the target precision
    fallback: int  # labels with too few positives: the pooled threshold
    never: int  # labels written as NEVER: unreachable, or on a pooled threshold of +inf
    pooled_threshold: float  # the fallback threshold (NaN: no label needed it; +inf: none)


def write_calibration(
    path: str | Path,
    labels: Sequence[str],
    calibration: Calibration,
    comment: str = "",
    model: str = "",
    model_fingerprint: str = "",
) -> ThresholdsWritten:
    """Write ``calibration`` as the thresholds file ``mkt-tag tag --thresholds`` reads
    (``thresholds.write_thresholds``: the model and its fingerprint go into its header), and
    say how its labels were served."""
    never = write_thresholds(
        path, labels, calibration.thresholds, comment, model, model_fingerprint
    )
    status = calibration.status
    return ThresholdsWritten(
        calibrated=int((status == "calibrated").sum()),
        unreachable=int((status == "unreachable").sum()),
        fallback=int((status == "fallback").sum()),
        never=never,
        pooled_threshold=calibration.pooled_threshold,
    )
