"""The paper's metric rows of a ``ScoreSet``, and the files that report them.

``evaluate`` gives the ZSL (unseen labels), GZSL (all labels) and seen rows: mAP and micro
P/R/F1 at top-K (``metrics.py``) -> ``EvalReport``; ``write_metrics`` (``metrics.json``) and
``write_per_label`` (``per_label.csv``) save it, ``plots.write_report_png`` draws it.

Each row ranks scores fused over its own labels only (``ScoreSet.row_scores``), as the
paper's protocol does: the ZSL row is what a vocabulary of the unseen labels alone gives.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mkt_tag._version import __version__
from mkt_tag.evaluate.metrics import PRF, average_precision, mean_average_precision, top_k_prf
from mkt_tag.evaluate.scores import ScoreSet
from mkt_tag.files import atomic_write_text

DEFAULT_KS = (3, 5)
ROW_FUSION = "row labels"  # each row's scores fused over its own labels' candidates
ALL_FUSION = "all labels"  # a scores file without stream scores: every row reads one fusion


def json_number(value: float) -> float | None:
    """JSON has no NaN or infinity: undefined metrics (and "no threshold") are null."""
    return float(value) if math.isfinite(value) else None


def prf_json(prf: PRF) -> dict[str, Any]:
    return {
        "precision": json_number(prf.precision),
        "recall": json_number(prf.recall),
        "f1": json_number(prf.f1),
        "true_positives": prf.true_positives,
        "predicted": prf.predicted,
        "positives": prf.positives,
    }


@dataclass
class Row:
    """The metrics of one group of labels (ZSL, GZSL or seen)."""

    name: str  # "ZSL" (unseen labels), "GZSL" (all labels) or "seen"
    labels: int  # labels in the group
    labels_with_positives: int  # labels with at least one +1 entry (the default mAP's)
    map: float  # mean AP over labels with positives; NaN when none has one
    map_reference: float | None  # the reference code's mAP (empty labels count 0); None: not asked
    at_k: dict[int, PRF]  # micro precision / recall / F1 of each image's top K labels

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "labels": self.labels,
            "labels_with_positives": self.labels_with_positives,
            "map": json_number(self.map),
        }
        if self.map_reference is not None:
            document["map_reference"] = json_number(self.map_reference)
        document["at_k"] = {str(k): prf_json(prf) for k, prf in self.at_k.items()}
        return document


@dataclass
class EvalReport:
    """Every metric of one evaluation; ``to_json`` is the content of ``metrics.json``."""

    images: int
    labels: list[str]
    unseen: NDArray[np.bool_]  # per label
    ap: NDArray[np.float64]  # per label, in its own row (unseen: ZSL, seen: seen); NaN: no +1
    ap_gzsl: NDArray[np.float64]  # per label, among all labels (the GZSL row's)
    positives: NDArray[np.int64]  # per label: +1 entries
    ks: list[int]
    rows: list[Row]  # ZSL, GZSL, seen; a group without labels has no row
    fusion: str = ROW_FUSION  # what each row's scores are fused over (ALL_FUSION: old files)
    model: str = ""  # what made the scores
    streams: str = ""  # the scores fused: both, global or local ("" unknown: an old file)
    source: str = ""  # the data (or scores) file, for the record
    failed_images: int = 0  # images of the data that could not be read (not in ``images``)
    extra: dict[str, Any] = field(default_factory=dict)  # more sections, after the rows

    def row(self, name: str) -> Row | None:
        return next((row for row in self.rows if row.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "mkt_tag": __version__,
            "model": self.model,
            "source": self.source,
            "images": self.images,
            "failed_images": self.failed_images,
            "labels": len(self.labels),
            "unseen_labels": int(self.unseen.sum()),
            "ks": list(self.ks),
            "fusion": self.fusion,
            "streams": self.streams or None,
            "rows": {row.name: row.to_json() for row in self.rows},
            **self.extra,
        }


def evaluate(
    scores: ScoreSet, ks: Sequence[int] = DEFAULT_KS, reference: bool = False
) -> EvalReport:
    """The ZSL (unseen labels), GZSL (all labels) and seen rows of ``scores``.

    Each row ranks its labels' scores fused over its labels alone (``ScoreSet.row_scores``;
    without stream scores, the scores fused over all labels: see ``EvalReport.fusion``).
    It has mAP (the mean over labels with a positive; with ``reference`` also the reference
    code's mean over all labels) and micro P/R/F1 at each K, top-K taken among the row's
    labels. A group without labels gets no row.
    """
    wanted = list(dict.fromkeys(int(k) for k in ks))
    unseen = np.asarray(scores.unseen, dtype=bool)
    ap: dict[str, NDArray[np.float64]] = {}  # row name -> each label's AP in it (NaN: not in)
    positives = np.zeros(unseen.size, dtype=np.int64)
    rows: list[Row] = []
    found: dict[bytes, tuple[Row, NDArray[np.float64]]] = {}  # the same labels: one row
    for name, mask in (("ZSL", unseen), ("GZSL", np.ones_like(unseen)), ("seen", ~unseen)):
        columns = np.flatnonzero(mask)
        if columns.size == 0:
            continue
        if mask.tobytes() not in found:
            row_scores = scores.row_scores(columns)
            row_targets = scores.targets[:, columns]
            per_label = average_precision(row_scores, row_targets)
            row = Row(
                name=name,
                labels=int(columns.size),
                labels_with_positives=int((per_label.n_positives > 0).sum()),
                map=mean_average_precision(per_label.ap),
                map_reference=(
                    mean_average_precision(per_label.ap, reference=True) if reference else None
                ),
                at_k=top_k_prf(row_scores, row_targets, wanted),
            )
            del row_scores, row_targets  # a row's matrices can be large: one at a time
            label_ap = np.full(unseen.size, np.nan)
            label_ap[columns] = per_label.ap
            positives[columns] = per_label.n_positives
            found[mask.tobytes()] = (row, label_ap)
        row, ap[name] = found[mask.tobytes()]  # the same labels as an earlier row: its copy
        rows.append(dataclasses.replace(row, name=name))
    # each label's AP in its own row: an unseen label's among the unseen (ZSL), a seen one's
    # among the seen
    own = np.where(unseen, ap.get("ZSL", np.nan), ap.get("seen", np.nan))
    return EvalReport(
        images=len(scores),
        labels=list(scores.labels),
        unseen=unseen,
        ap=own,
        ap_gzsl=ap["GZSL"] if "GZSL" in ap else np.full(unseen.size, np.nan),
        positives=positives,
        ks=wanted,
        rows=rows,
        model=scores.model,
        streams=scores.stream_scores.streams if scores.stream_scores is not None else "",
        fusion=ROW_FUSION if scores.stream_scores is not None else ALL_FUSION,
    )


def write_metrics(path: str | Path, report: EvalReport) -> None:
    """``metrics.json``: the report's rows, with undefined values as null."""
    text = json.dumps(report.to_json(), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_text(Path(path), text + "\n")


def write_per_label(path: str | Path, report: EvalReport) -> None:
    """One CSV row per label, in vocabulary order: label, ap (in the label's own row: ZSL or
    seen; empty: no positive), positives, kind (seen / unseen), ap_gzsl (among all labels)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "ap", "positives", "kind", "ap_gzsl"])
    for label, ap, positives, unseen, ap_gzsl in zip(
        report.labels, report.ap, report.positives, report.unseen, report.ap_gzsl, strict=True
    ):
        writer.writerow([label, _exact(ap), int(positives), _kind(unseen), _exact(ap_gzsl)])
    atomic_write_text(Path(path), buffer.getvalue())


def _exact(value: float) -> str:
    """A float as CSV text that reads back exactly; NaN (undefined) as an empty cell."""
    return "" if math.isnan(value) else repr(float(value))


def _kind(unseen: bool | np.bool_) -> str:
    return "unseen" if unseen else "seen"
