"""Each stream's raw scores per label candidate, and MKT's fusion again over some labels.

MKT's fused score L2-normalises each stream's scores across the candidate labels, so it
depends on which labels compete: the paper's ZSL number ranks the unseen labels among
themselves, not among every label. ``StreamScores`` keeps what fusion starts from (the
global and local scores of every candidate: a label's own text, and each alias) so that
``fused(labels)`` gives the scores a vocabulary of those labels alone would give: each
stream normalised across their candidates, averaged, then each label's best candidate
(``model.fuse``, ``tagging.label_embeddings.LabelSet.label_scores``).

Numpy only, in float32 as the model computes (each norm summed in float64); rows in chunks
to bound temporaries. Over every label it equals the model's fusion to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mkt_tag.config import STREAMS

NORM_EPS = 1e-12  # torch.nn.functional.normalize's: a zero vector stays zero
CHUNK_VALUES = 1 << 22  # float32 values per temporary (16 MB)


@dataclass
class StreamScores:
    """Each stream's raw scores (not normalised, not fused) of every label candidate."""

    global_: NDArray[np.float32]  # N x K: global stream (class token) per candidate
    local: NDArray[np.float32]  # N x K: local stream (mean of the top-k patches)
    owner: NDArray[np.int64]  # K: the label (score column) each candidate scores for
    streams: str = "both"  # what the fusion uses: "both" (MKT), "global" or "local"

    def __post_init__(self) -> None:
        if self.streams not in STREAMS:
            raise ValueError(f"streams must be one of {', '.join(STREAMS)}, not {self.streams!r}")
        if self.global_.shape != self.local.shape or self.global_.ndim != 2:
            raise ValueError(
                f"global and local scores must be N x K of one shape, "
                f"got {self.global_.shape} and {self.local.shape}"
            )
        if self.owner.shape != (self.global_.shape[1],):
            raise ValueError(
                f"owner must name the label of each of {self.global_.shape[1]} candidates, "
                f"got {self.owner.shape}"
            )
        if self.owner.size and (
            self.owner.min() < 0 or np.bincount(self.owner).min() == 0
        ):  # a label without a candidate could not be scored
            raise ValueError("every label 0..L-1 must own at least one candidate")

    @property
    def labels(self) -> int:
        """How many labels (score columns) the candidates score for."""
        return int(self.owner.max(initial=-1)) + 1

    def __len__(self) -> int:
        return int(self.global_.shape[0])

    def subset(self, rows: NDArray[np.intp]) -> StreamScores:
        """The same candidates on some of the images."""
        return StreamScores(self.global_[rows], self.local[rows], self.owner.copy(), self.streams)

    def fused(self, labels: ArrayLike, keep: ArrayLike | None = None) -> NDArray[np.float32]:
        """Fused scores when only ``labels`` (score columns) compete.

        Args:
            labels: the competing labels, as column indices (or a boolean mask).
            keep: positions in ``labels`` to return (default all): the normalisation still
                runs over every candidate of ``labels``.

        Returns:
            N x len(keep) float32 scores, in the order of ``labels`` (then ``keep``).
        """
        selected = _indices(labels, self.labels)
        kept = np.arange(selected.size) if keep is None else np.asarray(keep, dtype=np.intp)
        position = np.full(self.labels, -1, dtype=np.intp)
        position[selected] = np.arange(selected.size)
        candidate_position = position[self.owner]
        competing = np.flatnonzero(candidate_position >= 0)  # whose norms count
        # the candidates of the kept labels, grouped by output column (each has one or more)
        wanted = np.full(selected.size, -1, dtype=np.intp)
        wanted[kept] = np.arange(kept.size)
        column = wanted[candidate_position[competing]]
        order = np.argsort(column, kind="stable")
        scored = order[column[order] >= 0]  # positions in ``competing``
        starts = np.searchsorted(column[scored], np.arange(kept.size))
        one_each = scored.size == kept.size  # no alias among them: no maximum to take
        out = np.empty((len(self), kept.size), dtype=np.float32)
        if kept.size == 0:
            return out
        step = max(1, CHUNK_VALUES // max(1, competing.size))
        for start in range(0, len(self), step):
            rows = slice(start, start + step)
            fused = self._fused_candidates(rows, competing, scored)
            out[rows] = fused if one_each else np.maximum.reduceat(fused, starts, axis=1)
        return out

    def _fused_candidates(
        self, rows: slice, competing: NDArray[np.intp], scored: NDArray[np.intp]
    ) -> NDArray[np.float32]:
        """MKT's fusion (``model.fuse``) of some rows: each stream normalised over the
        ``competing`` candidates, then the ``scored`` ones of them (positions) averaged."""
        parts = []
        if self.streams in ("both", "global"):
            parts.append(_normalised(_columns(self.global_[rows], competing), scored))
        if self.streams in ("both", "local"):
            parts.append(_normalised(_columns(self.local[rows], competing), scored))
        if len(parts) == 1:
            return parts[0]
        parts[0] += parts[1]
        parts[0] /= np.float32(2)
        return parts[0]


def _columns(block: NDArray[np.float32], columns: NDArray[np.intp]) -> NDArray[np.float32]:
    """Some columns of a block (no copy when they are all of them, in order)."""
    if columns.size == block.shape[1] and (columns == np.arange(columns.size)).all():
        return block
    return np.take(block, columns, axis=1)


def _normalised(scores: NDArray[np.float32], scored: NDArray[np.intp]) -> NDArray[np.float32]:
    """The ``scored`` columns of each row divided by the row's L2 norm (at least
    ``NORM_EPS``): float32 as the model computes, the norm summed in float64."""
    norms = np.sqrt(np.einsum("ij,ij->i", scores, scores, dtype=np.float64))
    divisor = np.maximum(norms, NORM_EPS).astype(np.float32)[:, None]
    return np.asarray(_columns(scores, scored) / divisor, dtype=np.float32)


def _indices(labels: ArrayLike, n_labels: int) -> NDArray[np.intp]:
    """Column indices from indices or a boolean mask."""
    array = np.asarray(labels)
    if array.dtype == bool:
        if array.shape != (n_labels,):
            raise ValueError(f"a label mask must have {n_labels} entries, got {array.shape}")
        return np.flatnonzero(array)
    indices = array.astype(np.intp).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= n_labels):
        raise ValueError(f"label indices must lie in 0..{n_labels - 1}")
    if np.unique(indices).size != indices.size:
        raise ValueError("label indices must not repeat")
    return indices
