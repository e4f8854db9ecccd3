"""Threshold calibration: best F1, a target precision, the pooled fallback, brute force."""

from __future__ import annotations

import numpy as np
import pytest

from mkt_tag.evaluate import ranking
from mkt_tag.evaluate.calibration import calibrate_thresholds, pooled_threshold
from mkt_tag.evaluate.metrics import threshold_prf
from tests.evaluate.test_metrics import column, labels_of, random_data

SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
TARGETS = [1, 1, 1, -1, -1, 1]  # F1 by threshold: .4 .67 .86 .75 .67 .8; precision 1 1 1 .75 .6 .67


def test_calibration_maximises_f1():
    result = calibrate_thresholds(column(SCORES), labels_of(TARGETS), min_positives=1)
    assert result.thresholds[0] == pytest.approx(0.7)
    assert result.f1[0] == pytest.approx(6 / 7)
    assert result.precision[0] == 1.0 and result.recall[0] == 0.75
    assert result.status.tolist() == ["calibrated"]


def test_calibration_f1_ties_go_to_the_higher_threshold_and_tied_scores_enter_together():
    tied_f1 = calibrate_thresholds(column([0.9, 0.8, 0.7, 0.6]), labels_of([1, -1, -1, 1]))
    assert tied_f1.thresholds[0] == pytest.approx(0.9)  # F1 2/3 at 0.9 and at 0.6
    tied_scores = calibrate_thresholds(column([0.9, 0.5, 0.5]), labels_of([1, 1, -1]))
    assert tied_scores.thresholds[0] == 0.5
    assert tied_scores.precision[0] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("scores", "targets", "target", "expected"),
    [
        (SCORES, TARGETS, 0.75, 0.7),  # 0.6 has precision 0.75 too, at no more recall
        (SCORES, TARGETS, 0.6, 0.4),
        (SCORES, TARGETS, 1.0, 0.7),
        ([0.9, 0.8, 0.7, 0.6], [1, -1, 1, 1], 0.75, 0.6),  # precision exactly 3/4 counts
        ([0.9, 0.8, 0.7, 0.6], [1, -1, 1, 1], 0.76, 0.9),
    ],
)
def test_calibration_to_a_target_precision(scores, targets, target, expected):
    result = calibrate_thresholds(
        column(scores), labels_of(targets), target_precision=target, min_positives=1
    )
    assert result.thresholds[0] == pytest.approx(expected)
    assert result.precision[0] >= target


def test_unreachable_target_precision_never_predicts():
    result = calibrate_thresholds(
        column([0.9, 0.8]), labels_of([-1, 1]), target_precision=0.9, min_positives=1
    )
    assert result.thresholds[0] == np.inf
    assert result.status.tolist() == ["unreachable"]
    assert np.isnan(result.precision[0]) and result.recall[0] == 0


def test_calibration_fallback_uses_the_pooled_threshold():
    scores, targets = random_data(8, 200, 4, ties=True)
    targets[:, 1] = np.where(np.arange(200) < 2, 1, -1)  # two positives
    targets[:, 3] = -1  # none
    result = calibrate_thresholds(scores, targets, min_positives=3)
    assert result.status.tolist() == ["calibrated", "fallback", "calibrated", "fallback"]
    assert result.pooled_threshold == pooled_threshold(scores, targets)
    assert result.thresholds[1] == result.thresholds[3] == result.pooled_threshold
    again = threshold_prf(scores, targets, result.thresholds)
    np.testing.assert_array_equal(again.f1, result.f1)
    np.testing.assert_array_equal(again.precision, result.precision)
    np.testing.assert_array_equal(again.recall, result.recall)
    enough = calibrate_thresholds(scores[:, [0, 2]], targets[:, [0, 2]], min_positives=1)
    assert np.isnan(enough.pooled_threshold)


def brute_force_threshold(scores: np.ndarray, positive: np.ndarray, target: float | None):
    """Try every positive score as threshold (ties: F1 keeps the higher, precision the lower)."""
    best, best_value = np.inf, -1.0
    for threshold in np.unique(scores[positive])[::-1]:
        predicted = scores >= threshold
        hits = (predicted & positive).sum()
        if target is None:
            value = 2 * hits / (predicted.sum() + positive.sum())
            if value > best_value:
                best, best_value = threshold, value
        elif hits / predicted.sum() >= target:
            best = threshold
    return best


@pytest.mark.parametrize("target", [None, 0.5, 0.7])
def test_calibration_and_pooled_threshold_match_brute_force(target, monkeypatch):
    scores, targets = random_data(9, 90, 6, ties=True)
    result = calibrate_thresholds(scores, targets, target_precision=target, min_positives=1)
    for j in range(6):
        labelled = targets[:, j] != 0
        expected = brute_force_threshold(scores[labelled, j], targets[labelled, j] == 1, target)
        assert result.thresholds[j] == expected
    labelled = targets != 0
    expected = brute_force_threshold(scores[labelled], targets[labelled] == 1, target)
    assert pooled_threshold(scores, targets, target_precision=target) == expected
    monkeypatch.setattr(ranking, "CHUNK_BYTES", 1)
    chunked = calibrate_thresholds(scores, targets, target_precision=target, min_positives=1)
    np.testing.assert_array_equal(chunked.thresholds, result.thresholds)
    assert pooled_threshold(scores, targets, target_precision=target) == expected


def test_calibration_without_images_or_with_a_bad_target():
    result = calibrate_thresholds(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.int8))
    assert result.status.tolist() == ["fallback", "fallback"]
    assert (result.thresholds == np.inf).all()
    with pytest.raises(ValueError, match="target precision"):
        calibrate_thresholds(column(SCORES), labels_of(TARGETS), target_precision=1.5)
