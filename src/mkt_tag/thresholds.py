"""Per-label thresholds for ``mkt-tag tag``: what they change on held-out images, and their file.

The thresholds themselves are chosen by ``calibration.calibrate_thresholds`` (best F1 or a
target precision, with a global-threshold fallback for labels with few positives). Here:

- ``check_calibration``: choose them on one part of the images (a seeded split) and measure
  them on the other part, against the best single global threshold and top-K;
- ``write_thresholds``: the ``label<TAB>threshold`` file ``mkt-tag tag --thresholds`` reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mkt_tag.calibration import MIN_POSITIVES, Calibration, calibrate_thresholds, pooled_threshold
from mkt_tag.evaluation import DEFAULT_KS, ScoreSet, json_number, prf_json
from mkt_tag.metrics import PRF, threshold_prf, top_k_prf
from mkt_tag.outputs import atomic_write_text, write_error

SPLIT_SEED = 0  # the calibration / held-out split is the same on every run
# Written for a label that no threshold serves (never predicted): read_thresholds takes only
# finite numbers, and this one is above every float32 score, so `mkt-tag tag` never picks it.
NEVER = 1e308


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


def split_images(
    n_images: int, held_out: float, seed: int = SPLIT_SEED
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """A seeded random (calibration rows, held-out rows) split; ``held_out`` is a share.

    Raises:
        ValueError: a part would be empty.
    """
    if not 0 < held_out < 1:
        raise ValueError(f"the held-out share must lie between 0 and 1, got {held_out}")
    order = np.random.default_rng(seed).permutation(n_images)
    n_held = round(n_images * held_out)
    if n_held < 1 or n_held >= n_images:
        raise ValueError(f"{n_images} images are too few to hold out {held_out:.0%}")
    return np.sort(order[n_held:]), np.sort(order[:n_held])


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
    chosen on one part by the same rule (``calibration.py``: F1, or ``target_precision``),
    and all three selections (per-label, global, top-K) are measured on the other part.

    Raises:
        ValueError: too few images for the split.
    """
    calibration_rows, held_rows = split_images(len(scores), held_out, seed)
    fit, test = scores.subset(calibration_rows), scores.subset(held_rows)
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


def write_thresholds(
    path: str | Path, labels: Sequence[str], calibration: Calibration, comment: str = ""
) -> ThresholdsWritten:
    """The ``label<TAB>threshold`` file ``mkt-tag tag --thresholds`` reads.

    Thresholds are written with ``repr`` (round-trip exact: an entry scored exactly at its
    threshold stays a prediction). A label that is never to be predicted (+inf: a target
    precision out of reach, or no positive anywhere) is written as ``NEVER`` (1e308), a
    finite number above every score, since ``read_thresholds`` takes only finite numbers;
    leaving the label out would instead let ``tag`` predict it freely. ``comment`` lines go
    first, as ``#`` lines.
    """
    thresholds = calibration.thresholds
    never = ~np.isfinite(thresholds)
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    lines += [
        f"# {NEVER!r} = never predicted ({int(never.sum())} labels here)",
        "# label<TAB>threshold: mkt-tag tag --thresholds THIS_FILE",
    ]
    for label, threshold in zip(labels, thresholds, strict=True):
        value = NEVER if not math.isfinite(threshold) else float(threshold)
        lines.append(f"{label}\t{value!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    atomic_write_text(path, "\n".join(lines) + "\n")
    status = calibration.status
    return ThresholdsWritten(
        calibrated=int((status == "calibrated").sum()),
        unreachable=int((status == "unreachable").sum()),
        fallback=int((status == "fallback").sum()),
        never=int(never.sum()),
        pooled_threshold=calibration.pooled_threshold,
    )
