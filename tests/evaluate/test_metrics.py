"""Metrics: hand-computed cases, scikit-learn, brute-force loops, the docs' worked example."""

from __future__ import annotations

import numpy as np
import pytest

from mkt_tag.evaluate import ranking
from mkt_tag.evaluate.calibration import calibrate_thresholds
from mkt_tag.evaluate.metrics import (
    PRF,
    average_precision,
    mean_average_precision,
    precision_recall_curve,
    threshold_prf,
    top_k_prf,
)


def column(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)[:, None]


def labels_of(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int8)[:, None]


def random_data(seed: int, n_images: int, n_labels: int, ties: bool = False):
    """float32 scores (tie-free unless ``ties``) and targets with ~25% positives, 10% ignored."""
    rng = np.random.default_rng(seed)
    if ties:
        scores = rng.integers(0, 6, (n_images, n_labels)).astype(np.float32)
    else:
        scores = rng.standard_normal((n_images, n_labels)).astype(np.float32)
        for j in range(n_labels):
            assert np.unique(scores[:, j]).size == n_images, "random scores tie: change seed"
    targets = rng.choice(np.array([-1, 0, 1], np.int8), (n_images, n_labels), p=[0.65, 0.1, 0.25])
    scores += (targets == 1) * np.float32(0.5)  # informative, so AP is neither ~0 nor 1
    return scores, targets


# --- average precision ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "targets", "expected"),
    [
        ([0.9, 0.8, 0.7, 0.6], [1, -1, 1, -1], (1 + 2 / 3) / 2),
        ([0.95, 0.9, 0.8, 0.75, 0.7, 0.6], [0, 1, -1, 0, 1, -1], (1 + 2 / 3) / 2),  # 0: no rank
        ([0.5, 0.5, 0.5], [1, -1, -1], 1 / 3),  # ties: negatives rank first
        ([0.5, 0.5, 0.5], [-1, -1, 1], 1 / 3),  # ... whatever the image order
        ([0.5, 0.5, 0.5], [1, 1, -1], (1 / 2 + 2 / 3) / 2),
        ([0.9, 0.5, 0.5, 0.1], [1, 1, -1, 1], (1 + 2 / 3 + 3 / 4) / 3),
        ([0.0, -0.0], [1, -1], 1 / 2),  # -0.0 == 0.0 is a tie
        ([-0.0, 0.0], [1, -1], 1 / 2),
        ([0.2, 0.1, 0.3], [1, 1, 1], 1.0),  # all positive
        ([0.7], [1], 1.0),  # single image
        ([np.inf, -np.inf, 0.0], [-1, 1, -1], 1 / 3),
    ],
)
def test_average_precision_by_hand(scores, targets, expected):
    result = average_precision(column(scores), labels_of(targets))
    assert result.ap[0] == pytest.approx(expected, abs=1e-12)
    assert result.n_positives[0] == targets.count(1)


def test_label_without_positive_has_nan_ap():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4]], dtype=np.float32)
    targets = np.array([[-1, 0, 1], [-1, 0, -1]], dtype=np.int8)
    result = average_precision(scores, targets)
    assert np.isnan(result.ap[:2]).all()
    assert result.ap[2] == 1.0
    assert result.n_positives.tolist() == [0, 0, 1]


def test_scores_are_ranked_as_float32():
    scores = np.array([[1.0 + 1e-12], [1.0]])  # distinct in float64, equal in float32
    targets = np.array([[1], [-1]], dtype=np.int8)
    assert average_precision(scores, targets).ap[0] == 0.5


def test_average_precision_ignores_image_order():
    scores, targets = random_data(1, 200, 7, ties=True)
    order = np.random.default_rng(2).permutation(200)
    first = average_precision(scores, targets).ap
    np.testing.assert_array_equal(first, average_precision(scores[order], targets[order]).ap)


@pytest.mark.parametrize(("n_images", "n_labels"), [(50, 3), (400, 17)])
def test_average_precision_matches_sklearn(n_images, n_labels):
    from sklearn.metrics import average_precision_score  # 3 s to import: only where needed

    scores, targets = random_data(n_images, n_images, n_labels)
    result = average_precision(scores, targets)
    for j in range(n_labels):
        labelled = targets[:, j] != 0
        expected = average_precision_score(targets[labelled, j] == 1, scores[labelled, j])
        assert result.ap[j] == pytest.approx(expected, abs=1e-12)


def test_label_subsets_select_columns(monkeypatch):
    scores, targets = random_data(3, 120, 9)
    full = average_precision(scores, targets).ap
    np.testing.assert_array_equal(
        average_precision(scores, targets, labels=[7, 2]).ap, full[[7, 2]]
    )
    mask = np.arange(9) % 2 == 0
    np.testing.assert_array_equal(average_precision(scores, targets, labels=mask).ap, full[mask])
    assert average_precision(scores, targets, labels=[]).ap.shape == (0,)
    monkeypatch.setattr(ranking, "CHUNK_BYTES", 1)  # one label per chunk
    np.testing.assert_array_equal(average_precision(scores, targets).ap, full)


def test_no_images():
    scores, targets = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int8)
    result = average_precision(scores, targets)
    assert np.isnan(result.ap).all() and result.n_positives.tolist() == [0, 0, 0]
    assert top_k_prf(scores, targets, [3])[3] == PRF(0, 0, 0)
    assert threshold_prf(scores, targets, 0.5).micro() == PRF(0, 0, 0)


@pytest.mark.parametrize(
    ("scores", "targets", "labels", "message"),
    [
        (np.array([[np.nan]]), np.array([[1]]), None, "NaN"),
        (np.array([[0.5]]), np.array([[2]]), None, r"\+1, -1 and 0"),
        (np.array([[0.5]]), np.array([[1.0]]), None, "integers"),
        (np.array([[1j]]), np.array([[1]]), None, "real numbers"),
        (np.zeros((2, 3)), np.zeros((2, 2), int), None, "one shape"),
        (np.zeros(3), np.zeros(3, int), None, "one shape"),
        (np.zeros((2, 3)), np.zeros((2, 3), int), [3], r"\[0, 3\)"),
        (np.zeros((2, 3)), np.zeros((2, 3), int), [True, False], "mask"),
        (np.zeros((2, 3)), np.zeros((2, 3), int), [1, 1], "repeat"),
    ],
)
def test_bad_inputs_are_refused(scores, targets, labels, message):
    with pytest.raises(ValueError, match=message):
        average_precision(scores, targets, labels=labels)


# --- mAP --------------------------------------------------------------------------------


def test_mean_average_precision_variants_by_hand():
    ap = np.array([0.5, np.nan, 1.0, np.nan])
    assert mean_average_precision(ap) == 0.75
    assert mean_average_precision(ap, reference=True) == 0.375
    assert np.isnan(mean_average_precision(np.array([np.nan])))
    assert mean_average_precision(np.array([np.nan]), reference=True) == 0.0
    assert np.isnan(mean_average_precision(np.zeros(0)))
    assert np.isnan(mean_average_precision(np.zeros(0), reference=True))


def reference_map(scores: np.ndarray, targets: np.ndarray) -> float:
    """The reference (BiAM) evaluation, transcribed as a plain loop over labels."""
    n_labels = scores.shape[1]
    ap = np.zeros(n_labels)
    for j in range(n_labels):
        label = targets[:, j]
        if (label > 0).sum() == 0:
            continue  # stays 0 and still counts in the mean
        mask = np.abs(label) == 1
        binary = np.clip(label[mask], 0, 1)
        order = np.argsort(-scores[mask, j], kind="stable")
        tp = (binary[order] == 1).astype(float)
        cum_tp, cum_fp = np.cumsum(tp), np.cumsum(1 - tp)
        precision = cum_tp / (cum_tp + cum_fp)
        ap[j] = (precision * tp).sum() / (label == 1).sum()
    return float(ap.mean())


def test_reference_map_matches_a_transcription_of_its_formula():
    scores, targets = random_data(4, 300, 12)
    targets[:, [2, 5, 9]] = np.where(targets[:, [2, 5, 9]] == 1, -1, targets[:, [2, 5, 9]])
    ap = average_precision(scores, targets).ap
    assert np.isnan(ap[[2, 5, 9]]).all()
    expected = reference_map(scores, targets)
    assert mean_average_precision(ap, reference=True) == pytest.approx(expected, abs=1e-12)
    assert mean_average_precision(ap) == pytest.approx(expected * 12 / 9, abs=1e-12)


# --- top-K ------------------------------------------------------------------------------


def test_top_k_by_hand():
    scores = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    targets = np.array([[1, -1, 1, 0], [-1, -1, -1, -1], [0, 1, -1, -1]], dtype=np.int8)
    # top-2: image 0 -> labels 0 (+1), 1; image 1 (no positive) -> 3, 2; image 2 -> 0 (0), 1 (+1)
    result = top_k_prf(scores, targets, [2, 1])
    assert result[2] == PRF(true_positives=2, predicted=6, positives=3)
    assert result[2].precision == pytest.approx(2 / 6)
    assert result[2].recall == pytest.approx(2 / 3)
    assert result[2].f1 == pytest.approx(2 * (1 / 3) * (2 / 3) / (1 / 3 + 2 / 3))
    assert result[1] == PRF(true_positives=1, predicted=3, positives=3)


@pytest.mark.parametrize(
    ("row", "expected_hits"),
    [
        ([-1, 1, -1, -1], 0),  # one slot for a tied positive and negative: the negative
        ([-1, 1, 0, -1], 0),  # an ignored entry also goes first
        ([-1, 1, 1, -1], 1),  # two tied positives, one slot
        ([1, 1, 1, -1], 2),
    ],
)
def test_top_k_ties_are_pessimistic(row, expected_hits):
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    result = top_k_prf(scores, np.array([row], np.int8), [2])[2]
    assert result.true_positives == expected_hits


def test_k_larger_than_label_count_is_clamped():
    scores = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    targets = np.array([[1, -1, 0], [-1, -1, 1]], dtype=np.int8)
    result = top_k_prf(scores, targets, [5])[5]
    assert result == PRF(true_positives=2, predicted=6, positives=2)
    assert result.recall == 1.0


def test_top_k_matches_a_loop_and_label_subsets(monkeypatch):
    scores, targets = random_data(5, 150, 11)
    subset = [1, 4, 5, 8, 10]
    for labels, sub_scores, sub_targets in [
        (None, scores, targets),
        (subset, scores[:, subset], targets[:, subset]),
    ]:
        result = top_k_prf(scores, targets, (1, 3, 5), labels=labels)
        for k in (1, 3, 5):
            top = np.argsort(-sub_scores, axis=1)[:, :k]
            hits = int((np.take_along_axis(sub_targets, top, axis=1) == 1).sum())
            assert result[k] == PRF(hits, 150 * k, int((sub_targets == 1).sum()))
        monkeypatch.setattr(ranking, "CHUNK_BYTES", 1)  # one image per chunk next time round
        assert top_k_prf(scores, targets, (1, 3, 5), labels=labels) == result
        monkeypatch.undo()


def test_top_k_on_empty_subset_and_bad_k():
    scores, targets = random_data(6, 10, 3)
    result = top_k_prf(scores, targets, [3], labels=[])[3]
    assert result == PRF(0, 0, 0)
    assert np.isnan(result.precision) and np.isnan(result.recall) and np.isnan(result.f1)
    with pytest.raises(ValueError, match="at least 1"):
        top_k_prf(scores, targets, [0])


# --- thresholds and PR curves -----------------------------------------------------------


def test_threshold_prf_by_hand():
    scores = np.array([[0.9, 0.2], [0.5, 0.6], [0.5, 0.1], [0.95, 0.7]])
    targets = np.array([[1, 1], [1, -1], [-1, 1], [0, -1]], dtype=np.int8)
    at_half = threshold_prf(scores, targets, 0.5)  # score == threshold is a prediction
    assert at_half.true_positives.tolist() == [2, 0]
    assert at_half.predicted.tolist() == [3, 2]  # the ignored 0.95 is not counted
    assert at_half.positives.tolist() == [2, 2]
    np.testing.assert_allclose(at_half.precision, [2 / 3, 0])
    np.testing.assert_allclose(at_half.f1, [4 / 5, 0])
    assert at_half.micro() == PRF(2, 5, 4)
    per_label = threshold_prf(scores, targets, [0.95, 0.1])
    assert per_label.true_positives.tolist() == [0, 2]
    assert np.isnan(per_label.precision[0])  # nothing labelled predicted
    assert per_label.predicted.tolist() == [0, 4]
    only_second = threshold_prf(scores, targets, [0.95, 0.1], labels=[1])
    assert only_second.true_positives.tolist() == [2]
    with pytest.raises(ValueError, match="3 thresholds for 2 labels"):
        threshold_prf(scores, targets, [0.1, 0.2, 0.3])


def test_precision_recall_curve_with_ties_and_ignored():
    curve = precision_recall_curve(np.array([0.9, 0.99, 0.5, 0.5, 0.1]), np.array([1, 0, 1, -1, 1]))
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.5, 0.1])
    np.testing.assert_allclose(curve.precision, [1, 2 / 3, 3 / 4])
    np.testing.assert_allclose(curve.recall, [1 / 3, 2 / 3, 1])
    assert curve.n_positives == 3


def test_thresholds_are_the_exact_scores():
    values = np.array([0.0, -0.0, -1.5, np.inf, -np.inf, 2.5, 1e-40, -1e-40, 0.1], np.float32)
    curve = precision_recall_curve(values, np.ones(values.size, np.int8))
    expected = np.unique(values.astype(np.float64))[::-1]  # -0.0 and 0.0 are one score
    np.testing.assert_array_equal(curve.thresholds, expected)
    np.testing.assert_array_equal(curve.precision, np.ones(expected.size))


def test_precision_recall_curve_matches_sklearn():
    from sklearn.metrics import precision_recall_curve as sklearn_pr_curve

    scores, targets = random_data(7, 80, 1)
    labelled = targets[:, 0] != 0
    precision, recall, thresholds = sklearn_pr_curve(targets[labelled, 0] == 1, scores[labelled, 0])
    curve = precision_recall_curve(scores[:, 0], targets[:, 0])
    np.testing.assert_allclose(curve.thresholds, thresholds[::-1])
    np.testing.assert_allclose(curve.precision, precision[:-1][::-1])
    np.testing.assert_allclose(curve.recall, recall[:-1][::-1])


# --- calibration ------------------------------------------------------------------------


def test_worked_example_of_the_docs():
    """The numbers of docs/metrics.md's worked example (dog, beach, sunset, snow)."""
    scores = np.array(
        [[0.9, 0.3, 0.5, 0.1], [0.4, 0.8, 0.8, 0.2], [0.6, 0.2, 0.7, 0.3], [0.6, 0.1, 0.2, 0.4]],
        dtype=np.float32,
    )
    targets = np.array(
        [[1, -1, 0, -1], [-1, 1, -1, -1], [1, -1, 1, -1], [-1, -1, -1, -1]], dtype=np.int8
    )
    ap = average_precision(scores, targets).ap
    np.testing.assert_allclose(ap[:3], [5 / 6, 1, 1 / 2])
    assert np.isnan(ap[3])
    assert mean_average_precision(ap) == pytest.approx(7 / 9)
    assert mean_average_precision(ap, reference=True) == pytest.approx(7 / 12)
    assert top_k_prf(scores, targets, [1, 2]) == {1: PRF(2, 4, 4), 2: PRF(4, 8, 4)}
    assert threshold_prf(scores, targets, 0.6).micro() == PRF(4, 6, 4)
    by_f1 = calibrate_thresholds(scores, targets, min_positives=1)
    np.testing.assert_allclose(by_f1.thresholds, [0.6, 0.8, 0.7, 0.6], rtol=1e-7)
    assert by_f1.status.tolist() == ["calibrated"] * 3 + ["fallback"]
    by_precision = calibrate_thresholds(scores, targets, target_precision=0.9, min_positives=1)
    np.testing.assert_allclose(by_precision.thresholds, [0.9, 0.8, np.inf, 0.9], rtol=1e-7)
