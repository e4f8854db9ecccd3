"""The ranking machinery shared by the metrics and the threshold calibration.

Scores and targets are checked and cut into chunks here, and each label's entries become
sorted uint64 keys (score bits in descending order, one bit for "positive"), so that AP,
precision-recall curves and calibration share one tie rule and one float32 rule, without a
loop per label or per image. See ``metrics.py`` for the rules themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Labels = Sequence[int] | NDArray[Any] | None

CHUNK_BYTES = 256 * 2**20  # temporaries per chunk; a label chunk needs ~32 bytes per entry
IGNORED_KEY = np.uint64(1 << 34)  # above every score key, low bit 0: ignored entries sort last


def ratio(numerator: ArrayLike, denominator: ArrayLike) -> NDArray[np.float64]:
    """numerator / denominator, NaN where the denominator is 0."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def checked_arrays(
    scores: ArrayLike, targets: ArrayLike, labels: Labels
) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.intp]]:
    """Arrays with matching 2-D shapes and the selected column indices."""
    score_array, target_array = np.asarray(scores), np.asarray(targets)
    if score_array.ndim != 2 or target_array.shape != score_array.shape:
        raise ValueError(
            f"scores and targets must be N x C matrices of one shape, "
            f"got {score_array.shape} and {target_array.shape}"
        )
    if not np.issubdtype(target_array.dtype, np.integer):
        raise ValueError(f"targets must be integers (+1, -1, 0), got {target_array.dtype}")
    if score_array.dtype.kind not in "iuf":  # signed, unsigned, float
        raise ValueError(f"scores must be real numbers, got {score_array.dtype}")
    return score_array, target_array, selected_columns(labels, score_array.shape[1])


def selected_columns(labels: Labels, n_labels: int) -> NDArray[np.intp]:
    if labels is None:
        return np.arange(n_labels, dtype=np.intp)
    selection = np.asarray(labels)
    if selection.dtype == bool:
        if selection.shape != (n_labels,):
            raise ValueError(f"label mask has shape {selection.shape}, expected ({n_labels},)")
        return np.flatnonzero(selection)
    if selection.size == 0:
        return np.zeros(0, dtype=np.intp)
    if selection.ndim != 1 or not np.issubdtype(selection.dtype, np.integer):
        raise ValueError("labels must be a 1-D array of column indices or a boolean mask")
    if selection.min() < 0 or selection.max() >= n_labels:
        raise ValueError(f"label indices must lie in [0, {n_labels})")
    if np.unique(selection).size != selection.size:
        raise ValueError("label indices must not repeat")
    return selection.astype(np.intp)


def score_block(scores: NDArray[Any], targets: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """A float32 score block and its int8 targets, after checking their values."""
    block = np.asarray(scores, dtype=np.float32)
    if np.isnan(block).any():
        raise ValueError("scores contain NaN")
    if targets.size and (targets.min() < -1 or targets.max() > 1):
        raise ValueError("targets must contain only +1, -1 and 0")
    return block, targets.astype(np.int8, copy=False)


def chunk_slices(total: int, per_item_bytes: int) -> Iterator[slice]:
    size = max(1, CHUNK_BYTES // max(1, per_item_bytes))
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def ranked_chunks(
    scores: NDArray[Any], targets: NDArray[Any], columns: NDArray[np.intp]
) -> Iterator[tuple[slice, NDArray[np.uint64]]]:
    """For chunks of the selected labels: (positions in ``columns``, ``ranked_keys``)."""
    for part in chunk_slices(len(columns), 32 * scores.shape[0]):
        yield (
            part,
            ranked_keys(*score_block(scores[:, columns[part]].T, targets[:, columns[part]].T)),
        )


def ranked_keys(scores: NDArray[np.float32], targets: NDArray[np.int8]) -> NDArray[np.uint64]:
    """Each row's entries as sorted keys: labels x N in, labels x N out.

    A key packs a score's float32 bits into an order that is descending in score (bits 1-32)
    with bit 0 set for a positive, so ascending keys rank the highest score first and, among
    equal scores, negatives before positives (the pessimistic tie rule). Ignored entries get
    ``IGNORED_KEY`` and sort last. One ``np.sort`` of uint64 keys is faster than an argsort.
    """
    bits = (scores + np.float32(0.0)).view(np.uint32)  # + 0.0 turns -0.0 into +0.0: one tie
    keys = flip_bits(bits).astype(np.uint64) << np.uint64(1)
    keys |= targets == 1
    keys[targets == 0] = IGNORED_KEY
    keys.sort(axis=1)
    return keys


def flip_bits(bits: NDArray[np.uint32]) -> NDArray[np.uint32]:
    """An involution on float32 bit patterns: the codes ascend as the floats descend."""
    return np.where(bits >= 0x80000000, bits, ~bits & np.uint32(0x7FFFFFFF))


def key_scores(keys: NDArray[np.uint64]) -> NDArray[np.float64]:
    """The scores that ``ranked_keys`` keys were made from (not defined for ignored keys)."""
    return flip_bits((keys >> np.uint64(1)).astype(np.uint32)).view(np.float32).astype(np.float64)


def operating_points(
    keys: NDArray[np.uint64],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
    """From ranked keys (labels x N): TP and #predicted down to each position, and whether
    the position ends a group of equal labelled scores, i.e. is reachable by a threshold."""
    labelled = keys < IGNORED_KEY
    true_positives = np.cumsum(keys & np.uint64(1), axis=1, dtype=np.int64)
    predicted = np.broadcast_to(np.arange(1, keys.shape[1] + 1, dtype=np.int64), keys.shape)
    group_end = np.ones(keys.shape, dtype=bool)
    group_end[:, :-1] = (keys[:, 1:] >> np.uint64(1)) != (keys[:, :-1] >> np.uint64(1))
    return true_positives, predicted, group_end & labelled
