"""The paper's metric rows of a ``ScoreSet``, and the files that report them.

``evaluate`` gives the ZSL (unseen labels), GZSL (all labels) and seen rows: mAP and micro
P/R/F1 at top-K (``metrics.py``) -> ``EvalReport``; ``write_metrics`` (``metrics.json``) and
``write_per_label`` (``per_label.csv``) save it, ``plots.write_report_png`` draws it.
"""

from __future__ import annotations

import csv
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
    ap: NDArray[np.float64]  # per label; NaN without positives
    positives: NDArray[np.int64]  # per label: +1 entries
    ks: list[int]
    rows: list[Row]  # ZSL, GZSL, seen; a group without labels has no row
    model: str = ""  # what made the scores
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
            "rows": {row.name: row.to_json() for row in self.rows},
            **self.extra,
        }


def evaluate(
    scores: ScoreSet, ks: Sequence[int] = DEFAULT_KS, reference: bool = False
) -> EvalReport:
    """The ZSL (unseen labels), GZSL (all labels) and seen rows of ``scores``.

    Each row has mAP (the mean over labels with a positive; with ``reference`` also the
    reference code's mean over all labels) and micro P/R/F1 at each K, restricted to the
    row's labels (top-K is taken among them). A group without labels gets no row.
    """
    wanted = list(dict.fromkeys(int(k) for k in ks))
    per_label = average_precision(scores.scores, scores.targets)
    unseen = np.asarray(scores.unseen, dtype=bool)
    rows = []
    for name, mask in (("ZSL", unseen), ("GZSL", np.ones_like(unseen)), ("seen", ~unseen)):
        columns = np.flatnonzero(mask)
        if columns.size == 0:
            continue
        ap = per_label.ap[columns]
        rows.append(
            Row(
                name=name,
                labels=int(columns.size),
                labels_with_positives=int((per_label.n_positives[columns] > 0).sum()),
                map=mean_average_precision(ap),
                map_reference=mean_average_precision(ap, reference=True) if reference else None,
                at_k=top_k_prf(scores.scores, scores.targets, wanted, labels=columns),
            )
        )
    return EvalReport(
        images=len(scores),
        labels=list(scores.labels),
        unseen=unseen,
        ap=per_label.ap,
        positives=per_label.n_positives,
        ks=wanted,
        rows=rows,
        model=scores.model,
    )


def write_metrics(path: str | Path, report: EvalReport) -> None:
    """``metrics.json``: the report's rows, with undefined values as null."""
    text = json.dumps(report.to_json(), indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_text(Path(path), text + "\n")


def write_per_label(path: str | Path, report: EvalReport) -> None:
    """One CSV row per label, in vocabulary order: label, ap (empty: no positive),
    positives, kind (seen / unseen)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "ap", "positives", "kind"])
    for label, ap, positives, unseen in zip(
        report.labels, report.ap, report.positives, report.unseen, strict=True
    ):
        writer.writerow(
            [label, "" if math.isnan(ap) else repr(float(ap)), int(positives), _kind(unseen)]
        )
    atomic_write_text(Path(path), buffer.getvalue())


def _kind(unseen: bool | np.bool_) -> str:
    return "unseen" if unseen else "seen"
