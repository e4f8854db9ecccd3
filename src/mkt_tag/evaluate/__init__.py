"""Evaluation: the MKT paper's metrics on labelled images, reports, threshold calibration.

>>> from mkt_tag.evaluate import evaluate_model
>>> result = evaluate_model("test.csv", "all.txt", unseen="unseen.txt", model="runs/mine/best")
>>> print(result.report.row("ZSL").map)

The modules, one step each: ``metrics`` (AP, mAP, P/R/F1; pure numpy, on ``ranking``),
``scores`` (a model's scores on a labelled set, and their ``.npz`` file), ``streams`` (each
stream's raw scores, fused again over the labels of one row), ``report`` (the ZSL / GZSL /
seen rows, metrics.json, per_label.csv), ``calibration`` (per-label thresholds), ``plots``
(report.png), and ``job`` (all of them in order, as ``mkt-tag eval``).

Names are imported on first use: ``train`` imports ``metrics``, which must stay free of
torch, and a scores file is evaluated without ever loading the model stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mkt_tag._lazy import lazy_attributes

if TYPE_CHECKING:
    from mkt_tag.evaluate.calibration import (
        Calibration,
        HeldOutCheck,
        ThresholdsWritten,
        calibrate_thresholds,
        check_calibration,
    )
    from mkt_tag.evaluate.job import (
        CalibrationResult,
        EvalResult,
        EvalSettings,
        ScoringSettings,
        evaluate_model,
        evaluate_saved_scores,
    )
    from mkt_tag.evaluate.report import EvalReport, Row, evaluate
    from mkt_tag.evaluate.scores import ScoreSet, load_scores, save_scores, score_images
    from mkt_tag.evaluate.streams import StreamScores

_LAZY = {
    "CalibrationResult": "mkt_tag.evaluate.job",
    "EvalResult": "mkt_tag.evaluate.job",
    "EvalSettings": "mkt_tag.evaluate.job",
    "ScoringSettings": "mkt_tag.evaluate.job",
    "evaluate_model": "mkt_tag.evaluate.job",
    "evaluate_saved_scores": "mkt_tag.evaluate.job",
    "EvalReport": "mkt_tag.evaluate.report",
    "Row": "mkt_tag.evaluate.report",
    "evaluate": "mkt_tag.evaluate.report",
    "ScoreSet": "mkt_tag.evaluate.scores",
    "load_scores": "mkt_tag.evaluate.scores",
    "save_scores": "mkt_tag.evaluate.scores",
    "score_images": "mkt_tag.evaluate.scores",
    "StreamScores": "mkt_tag.evaluate.streams",
    "Calibration": "mkt_tag.evaluate.calibration",
    "HeldOutCheck": "mkt_tag.evaluate.calibration",
    "ThresholdsWritten": "mkt_tag.evaluate.calibration",
    "calibrate_thresholds": "mkt_tag.evaluate.calibration",
    "check_calibration": "mkt_tag.evaluate.calibration",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "Calibration",
    "CalibrationResult",
    "EvalReport",
    "EvalResult",
    "EvalSettings",
    "HeldOutCheck",
    "Row",
    "ScoreSet",
    "ScoringSettings",
    "StreamScores",
    "ThresholdsWritten",
    "calibrate_thresholds",
    "check_calibration",
    "evaluate",
    "evaluate_model",
    "evaluate_saved_scores",
    "load_scores",
    "save_scores",
    "score_images",
]
