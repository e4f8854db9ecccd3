"""A model's scores on a labelled image set (``ScoreSet``), and the file that keeps them.

- ``score_images``: run a ``Tagger`` over a ``datasets.LabelledImages`` set, batched, as
  ``mkt-tag tag`` does; images that cannot be decoded are left out and returned;
- ``save_scores`` / ``load_scores``: keep a ``ScoreSet`` in an ``.npz`` file (no pickle), so
  every metric can be recomputed without the model.

A ``ScoreSet`` holds the fused scores over the whole vocabulary (what ``mkt-tag tag`` gives,
what thresholds are calibrated on) and, since format 2, each stream's raw scores per label
candidate (``streams.StreamScores``), from which ``row_scores`` fuses again over the labels of
one row (ZSL: the unseen labels among themselves).

No torch at import: recomputing metrics from a scores file never loads the model stack.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mkt_tag.config import STREAMS
from mkt_tag.errors import ImageLoadError, InputFileError
from mkt_tag.evaluate.streams import StreamScores
from mkt_tag.files import write_error
from mkt_tag.vocab import normalise

if TYPE_CHECKING:
    from mkt_tag.datasets import LabelledImages
    from mkt_tag.tagging.label_embeddings import LabelSet
    from mkt_tag.tagging.tagger import Tagger

# Version of the .npz layout written by save_scores. 1: fused scores only (mkt-tag 0.2);
# 2: also each stream's raw scores per candidate (optional: a ScoreSet may lack them).
SCORES_FORMAT = 2
STREAM_ARRAYS = ("global_scores", "local_scores", "candidate_labels", "streams")


@dataclass
class ScoreSet:
    """A model's scores on a labelled image set, with everything needed to evaluate them."""

    scores: NDArray[np.float32]  # N x C per-label scores, higher = more likely
    targets: NDArray[np.int8]  # N x C: +1 positive, -1 negative, 0 unknown (ignored)
    labels: list[str]  # C label names, in vocabulary order
    paths: list[str]  # N image paths, as the data file named them
    unseen: NDArray[np.bool_]  # C: True for labels the model was not trained on
    model: str = ""  # what made the scores (model id or checkpoint folder), for the record
    # Each stream's raw scores per candidate, to fuse again over a row's labels; None: not
    # kept (a format-1 file, or made by hand): every row then reads ``scores``.
    stream_scores: StreamScores | None = None
    format: int = SCORES_FORMAT  # of the file it was read from (1: no stream scores)

    def __post_init__(self) -> None:
        streams = self.stream_scores
        if streams is not None and (
            len(streams) != len(self.scores) or streams.labels != len(self.labels)
        ):
            raise ValueError(
                f"stream scores of {len(streams)} images for {streams.labels} labels do not "
                f"fit scores of {len(self.scores)} images for {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows: NDArray[np.intp], streams: bool = True) -> ScoreSet:
        """The same labels on some of the images (``streams=False``: without stream scores,
        which calibration does not need)."""
        kept = self.stream_scores if streams else None
        return ScoreSet(
            self.scores[rows],
            self.targets[rows],
            list(self.labels),
            [self.paths[i] for i in rows],
            self.unseen.copy(),
            self.model,
            None if kept is None else kept.subset(rows),
            self.format,
        )

    def row_scores(self, labels: ArrayLike, keep: ArrayLike | None = None) -> NDArray[np.float32]:
        """Scores of ``labels`` (column indices or mask) when only they compete: MKT's fusion
        again over their candidates (``StreamScores.fused``); N x len(labels), or the
        ``keep`` positions of them. Without stream scores: the columns of ``scores``, fused
        over all labels."""
        if self.stream_scores is not None:
            return self.stream_scores.fused(labels, keep)
        columns = np.asarray(labels)
        columns = np.flatnonzero(columns) if columns.dtype == bool else columns.astype(np.intp)
        return self.scores[:, columns if keep is None else columns[np.asarray(keep)]]


# --- scoring ----------------------------------------------------------------------------


def score_images(
    tagger: Tagger,
    data: LabelledImages,
    labels: LabelSet,
    unseen: NDArray[np.bool_] | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    model: str = "",
    parallel: int | None = None,
) -> tuple[ScoreSet, list[ImageLoadError]]:
    """Score every image of ``data`` against ``labels`` (embedded from the same vocabulary).

    Images are decoded and scored as ``mkt-tag tag`` does them (``Tagger.score_files``:
    ``parallel`` batches at once, ``workers`` decoding processes, both automatic by default).
    ``on_progress(n)`` is called after each batch with the number of images it held.

    Returns:
        The scores of the images that could be read, and one ``ImageLoadError`` per image
        that could not (left out of the scores).

    Raises:
        InputFileError: no image could be read.
    """
    if [normalise(lab) for lab in labels.labels] != [normalise(lab) for lab in data.labels]:
        raise ValueError("the label set and the data must come from the same vocabulary")
    scores = np.zeros((len(data), len(data.labels)), dtype=np.float32)
    # each stream's raw scores per candidate: to fuse again over the labels of each row
    global_scores = np.zeros((len(data), len(labels.owner)), dtype=np.float32)
    local_scores = np.zeros_like(global_scores)
    read = np.zeros(len(data), dtype=bool)
    failures: list[ImageLoadError] = []
    for batch in tagger.score_files(
        data.paths, labels, batch_size, workers, parallel, streams=True
    ):
        scores[batch.indices] = batch.scores
        global_scores[batch.indices] = batch.global_scores
        local_scores[batch.indices] = batch.local_scores
        read[batch.indices] = True
        failures += batch.failed
        if on_progress is not None:
            on_progress(len(batch.indices) + len(batch.failed))
    if not read.any():
        example = f", e.g. {failures[0]}" if failures else ""
        raise InputFileError(data.source, f"no image could be read ({len(failures)}{example})")
    kept = np.flatnonzero(read)
    if kept.size < len(data):  # copy only when something failed: the matrices can be large
        scores, global_scores, local_scores = (
            scores[kept],
            global_scores[kept],
            local_scores[kept],
        )
    streams = StreamScores(
        global_scores, local_scores, np.asarray(labels.owner, np.int64), tagger.model.config.streams
    )
    return (
        ScoreSet(
            scores=scores,
            targets=data.targets[kept],
            labels=list(data.labels),
            paths=[str(data.paths[i]) for i in kept],
            unseen=np.zeros(len(data.labels), dtype=bool) if unseen is None else np.asarray(unseen),
            model=model,
            stream_scores=streams,
        ),
        failures,
    )


# --- the scores file ----------------------------------------------------------------------


def save_scores(path: str | Path, scores: ScoreSet) -> None:
    """Write ``scores`` as an ``.npz`` that ``np.load(..., allow_pickle=False)`` reads.

    Arrays: ``scores`` (float32 N x C), ``targets`` (int8 N x C), ``labels`` and ``paths``
    (unicode), ``unseen`` (bool C), ``model`` (unicode scalar), ``format`` (int); with stream
    scores also ``global_scores`` and ``local_scores`` (float32 N x K candidates),
    ``candidate_labels`` (int64 K: each candidate's label) and ``streams`` (unicode scalar).
    Written to a temporary file that replaces ``path`` at the end, so a crash leaves no half
    file and any error removes the temporary one; missing folders are made.

    Raises:
        OutputError: the file cannot be written.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    arrays: dict[str, Any] = {
        "format": np.array(SCORES_FORMAT),
        "scores": np.asarray(scores.scores, dtype=np.float32),
        "targets": np.asarray(scores.targets, dtype=np.int8),
        "labels": np.array(scores.labels, dtype=np.str_),
        "paths": np.array(scores.paths, dtype=np.str_),
        "unseen": np.asarray(scores.unseen, dtype=bool),
        "model": np.array(scores.model, dtype=np.str_),
    }
    if scores.stream_scores is not None:
        streams = scores.stream_scores
        arrays["global_scores"] = np.asarray(streams.global_, dtype=np.float32)
        arrays["local_scores"] = np.asarray(streams.local, dtype=np.float32)
        arrays["candidate_labels"] = np.asarray(streams.owner, dtype=np.int64)
        arrays["streams"] = np.array(streams.streams, dtype=np.str_)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:  # streamed: no second copy of the matrix in memory
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:  # also Ctrl-C or a bug: never leave the half file behind
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_error(path, error) from None
        raise


def load_scores(path: str | Path) -> ScoreSet:
    """Read a file written by ``save_scores``, checking every array (nothing is unpickled).

    Raises:
        InputFileError: the file is missing, not such a file, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found" if not path.exists() else "not a file")
    if not zipfile.is_zipfile(path):
        raise InputFileError(path, "not an .npz scores file (write one with --save-scores)")
    try:
        with np.load(path, allow_pickle=False) as stored:
            missing = [
                key
                for key in ("scores", "targets", "labels", "paths", "unseen")
                if key not in stored.files
            ]
            if missing:
                raise InputFileError(
                    path, f"no {', '.join(missing)} array (not written by --save-scores)"
                )
            arrays = {key: stored[key] for key in stored.files}
    except InputFileError:
        raise
    except Exception as error:  # a damaged or foreign file: zip, zlib, format or pickle errors
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InputFileError(
            path, f"cannot read ({type(error).__name__}{': ' + reason if reason else ''})"
        ) from None
    return _checked_scores(path, arrays)


def _checked_scores(path: Path, arrays: dict[str, NDArray[Any]]) -> ScoreSet:
    def bad(reason: str) -> InputFileError:
        return InputFileError(path, reason)

    scores, targets = arrays["scores"], arrays["targets"]
    labels, paths, unseen = arrays["labels"], arrays["paths"], arrays["unseen"]
    if scores.ndim != 2 or scores.dtype.kind != "f":
        raise bad(f"scores must be an N x C float matrix, got {scores.dtype} {scores.shape}")
    n_images, n_labels = scores.shape
    if targets.shape != scores.shape or targets.dtype.kind not in "iu":
        raise bad(f"targets must be integers of shape {scores.shape}, got {targets.shape}")
    if targets.size and (targets.min() < -1 or targets.max() > 1):  # no temporaries
        raise bad("targets must be +1, -1 or 0")
    if labels.shape != (n_labels,) or labels.dtype.kind != "U":
        raise bad(f"labels must be {n_labels} strings, one per score column")
    if paths.shape != (n_images,) or (n_images and paths.dtype.kind != "U"):
        raise bad(f"paths must be {n_images} strings, one per score row")
    if unseen.shape != (n_labels,) or unseen.dtype != bool:
        raise bad(f"unseen must be {n_labels} booleans")
    if n_images == 0:
        raise bad("no images")
    if np.isnan(scores).any():
        raise bad("scores contain NaN")
    model = arrays.get("model")
    version = _format(arrays, bad)
    return ScoreSet(
        scores=scores.astype(np.float32, copy=False),
        targets=targets.astype(np.int8, copy=False),
        labels=[str(label) for label in labels],
        paths=[str(p) for p in paths],
        unseen=unseen,
        model=str(model) if model is not None and model.dtype.kind == "U" else "",
        stream_scores=_checked_streams(arrays, n_images, n_labels, bad) if version >= 2 else None,
        format=version,
    )


def _format(arrays: dict[str, NDArray[Any]], bad: Callable[[str], InputFileError]) -> int:
    """The file's layout version: 1 when it has none (the first layout)."""
    stored = arrays.get("format")
    if stored is None:
        return 1
    if stored.shape != () or stored.dtype.kind not in "iu":
        raise bad("format must be one integer")
    if int(stored) > SCORES_FORMAT:
        raise bad(
            f"written by a newer mkt-tag (format {int(stored)}; this one reads up to "
            f"{SCORES_FORMAT}): upgrade mkt-tag"
        )
    return int(stored)


def _checked_streams(
    arrays: dict[str, NDArray[Any]],
    n_images: int,
    n_labels: int,
    bad: Callable[[str], InputFileError],
) -> StreamScores | None:
    """The stream scores of a format-2 file (None when it was saved without them)."""
    present = [key for key in STREAM_ARRAYS if key in arrays]
    if not present:
        return None
    if len(present) < len(STREAM_ARRAYS):
        missing = ", ".join(key for key in STREAM_ARRAYS if key not in arrays)
        raise bad(f"stream scores without {missing}")
    global_, local = arrays["global_scores"], arrays["local_scores"]
    owner, streams = arrays["candidate_labels"], arrays["streams"]
    if global_.ndim != 2 or global_.dtype.kind != "f" or global_.shape[0] != n_images:
        raise bad(f"global_scores must be a {n_images} x K float matrix, got {global_.shape}")
    if local.shape != global_.shape or local.dtype.kind != "f":
        raise bad(f"local_scores must be floats of shape {global_.shape}, like global_scores")
    if owner.shape != (global_.shape[1],) or owner.dtype.kind not in "iu":
        raise bad(f"candidate_labels must be {global_.shape[1]} integers, one per candidate")
    owner = owner.astype(np.int64)  # uint64 values past int64 turn negative: refused next
    inside = owner.size == 0 or (owner.min() >= 0 and owner.max() < n_labels)
    if not inside or np.bincount(owner, minlength=n_labels).min(initial=1) == 0:
        raise bad(f"candidate_labels must give each of the {n_labels} labels a candidate")
    if streams.shape != () or streams.dtype.kind != "U" or str(streams) not in STREAMS:
        raise bad(f"streams must be one of {', '.join(STREAMS)}")
    if np.isnan(global_).any() or np.isnan(local).any():
        raise bad("stream scores contain NaN")
    return StreamScores(
        global_.astype(np.float32, copy=False),
        local.astype(np.float32, copy=False),
        owner,
        str(streams),
    )
