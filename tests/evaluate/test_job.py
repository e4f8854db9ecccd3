"""The evaluation flow in Python (``evaluate_model``, ``evaluate_saved_scores``): the same
numbers and files as ``mkt-tag eval``, its errors, its calibration summary."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mkt_tag.errors import ImageLoadError, LabelFileError
from mkt_tag.evaluate import (
    EvalResult,
    EvalSettings,
    ScoringSettings,
    evaluate_model,
    evaluate_saved_scores,
)
from mkt_tag.evaluate.metrics import average_precision
from tests.cli.test_eval import (
    HAND_SCORES,
    HAND_TARGETS,
    LABELS,
    ROWS,
    invoke,
    save_handmade,
    stored,
    write_dataset,
)
from tests.conftest import TINY_CONFIG

# the CLI's --workers 0 and --min-positives 1, as in tests/cli/test_eval.py
SCORING = {"workers": 0}


@dataclass
class Both:
    """The same evaluation through the CLI and through the library."""

    root: Path
    cli: object  # the CliRunner result
    cli_files: Path  # --out, --save-scores and --calibrate of the CLI run, in this folder
    result: EvalResult
    lib_files: Path  # the same for the library run
    progress: list[tuple[int, int]]
    warned: list[str]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Both:
    root = tmp_path_factory.mktemp("job")
    data = write_dataset(root)
    cache = root / "cache"
    cli_files, lib_files = root / "cli", root / "lib"
    cli = invoke(
        "--data", data, "--labels", root / "labels.txt", "--unseen", root / "unseen.txt",
        "--model", TINY_CONFIG, "--out", cli_files / "out",
        "--save-scores", cli_files / "scores.npz", "--calibrate", cli_files / "thresholds.tsv",
        "--min-positives", "1", "--workers", "0", "--cache-dir", cache,
    )  # fmt: skip
    progress: list[tuple[int, int]] = []
    warned: list[str] = []
    result = evaluate_model(
        data=data,
        labels=root / "labels.txt",
        unseen=root / "unseen.txt",
        model=str(TINY_CONFIG),
        settings=EvalSettings(
            out=lib_files / "out", calibrate=lib_files / "thresholds.tsv", min_positives=1
        ),
        scoring=ScoringSettings(save_scores=lib_files / "scores.npz", cache_dir=cache, **SCORING),
        on_progress=lambda done, total: progress.append((done, total)),
        on_warning=warned.append,
    )
    return Both(root, cli, cli_files, result, lib_files, progress, warned)


def test_the_result_is_what_the_cli_prints_and_writes(both):
    assert both.cli.exit_code == 0, both.cli.output
    report = both.result.report
    cli_metrics = json.loads((both.cli_files / "out" / "metrics.json").read_text())
    lib_metrics = json.loads((both.lib_files / "out" / "metrics.json").read_text())
    assert lib_metrics == cli_metrics
    assert json.loads(json.dumps(report.to_json())) == cli_metrics
    assert [row.name for row in report.rows] == ["ZSL", "GZSL", "seen"]
    for row in report.rows:  # the table's numbers, in percent
        assert f"{100 * row.map:.2f}" in both.cli.stdout
        assert f"{100 * row.at_k[3].f1:.2f}" in both.cli.stdout
    zsl = report.row("ZSL")
    assert zsl is not None and zsl.labels == 2
    for name in ("per_label.csv", "report.png"):
        assert (both.lib_files / "out" / name).is_file()
    assert (both.lib_files / "out" / "per_label.csv").read_text() == (
        both.cli_files / "out" / "per_label.csv"
    ).read_text()
    assert (both.lib_files / "thresholds.tsv").read_text() == (
        both.cli_files / "thresholds.tsv"
    ).read_text()
    saved, cli_saved = stored(both.lib_files / "scores.npz"), stored(both.cli_files / "scores.npz")
    assert np.array_equal(saved["scores"], cli_saved["scores"])
    assert np.array_equal(saved["scores"], both.result.scores.scores)
    assert both.result.scores.labels == LABELS and both.result.failures == []


def test_files_warnings_and_progress(both):
    out = both.lib_files / "out"
    assert both.result.files == [
        both.lib_files / "scores.npz",
        both.lib_files / "thresholds.tsv",
        out / "metrics.json",
        out / "per_label.csv",
        out / "report.png",
    ]
    assert all(path.is_file() for path in both.result.files)
    # the data label outside the vocabulary: given to on_warning, kept, and what the CLI says
    assert both.warned == both.result.warnings
    (zebra,) = [line for line in both.result.warnings if "'zebra'" in line]
    assert zebra in both.cli.stderr
    assert both.progress[0] == (0, 10) and both.progress[-1] == (10, 10)
    done = [d for d, _ in both.progress]
    assert done == sorted(done) and len(done) >= 2


def test_calibration_result_of_a_model_run(both):
    calibrated = both.result.calibration
    assert calibrated is not None and calibrated.path == both.lib_files / "thresholds.tsv"
    written = calibrated.written
    assert (written.calibrated, written.unreachable, written.fallback) == (5, 0, 0)
    assert f"5 labels: {written.calibrated} calibrated" in both.cli.stdout
    check = calibrated.check
    assert check is not None and calibrated.check_skipped == ""
    assert (check.calibration_images, check.held_out_images) == (5, 5)
    assert both.result.report.extra["calibration_check"] == check.to_json()
    assert calibrated.chosen.status.tolist() == ["calibrated"] * 5


def test_saved_scores_give_the_same_report(both, tmp_path):
    result = evaluate_saved_scores(both.lib_files / "scores.npz", labels=both.root / "labels.txt")
    assert result.report.to_json()["rows"] == both.result.report.to_json()["rows"]
    assert result.report.source == str(both.lib_files / "scores.npz")
    assert result.report.model == str(TINY_CONFIG)
    assert result.files == [] and result.calibration is None and result.failures == []
    # --unseen redefines the unseen labels of a scores file
    (tmp_path / "u.txt").write_text("DOG\n")
    again = evaluate_saved_scores(both.lib_files / "scores.npz", unseen=tmp_path / "u.txt")
    zsl = again.report.row("ZSL")
    assert zsl is not None and zsl.labels == 1
    assert again.scores.unseen.tolist() == [False, True, False, False, False]


def test_a_file_without_stream_scores_says_what_its_rows_are(tmp_path):
    """An old file (format 1) or one saved without stream scores: the ZSL and seen rows come
    from the fusion over all labels, and the run says so once."""
    path = save_handmade(tmp_path / "s.npz", HAND_SCORES, HAND_TARGETS, ["a", "b", "c"])
    with np.load(path) as saved:
        arrays = {key: saved[key] for key in saved.files}
    arrays["format"] = np.array(1)
    np.savez(path, **arrays)
    (tmp_path / "u.txt").write_text("b\n")
    warned: list[str] = []
    result = evaluate_saved_scores(path, unseen=tmp_path / "u.txt", on_warning=warned.append)
    (note,) = warned
    assert "fused scores only" in note and "format 1, written before mkt-tag 0.3" in note
    assert "over all 3 labels" in note and "ZSL and seen rows" in note
    assert result.report.fusion == "all labels" == result.report.to_json()["fusion"]
    zsl = result.report.row("ZSL")
    assert zsl is not None
    ap = average_precision(np.float32(HAND_SCORES), np.int8(HAND_TARGETS)).ap
    assert zsl.map == ap[1]  # the column of the scores fused over every label
    # without unseen labels (or with only unseen ones) every row is all labels: no note
    warned.clear()
    evaluate_saved_scores(path, on_warning=warned.append)
    (tmp_path / "all.txt").write_text("a\nb\nc\n")
    evaluate_saved_scores(path, unseen=tmp_path / "all.txt", on_warning=warned.append)
    assert warned == []


def test_unseen_labels_not_in_the_vocabulary(both, tmp_path):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("beach\nunicorn\n")
    with pytest.raises(LabelFileError) as raised:
        # refused before any model is loaded: this model does not exist
        evaluate_model(
            both.root / "data.csv", both.root / "labels.txt", unseen, "no-such-model:anywhere"
        )
    assert "'unicorn'" in str(raised.value) and str(unseen) in str(raised.value)
    assert raised.value.path == unseen
    with pytest.raises(LabelFileError, match="unicorn"):
        evaluate_saved_scores(both.lib_files / "scores.npz", unseen=unseen)


def test_a_scores_file_checked_against_another_label_file_is_refused(tmp_path):
    path = save_handmade(tmp_path / "s.npz", HAND_SCORES, HAND_TARGETS, ["a", "b", "c"])
    other = tmp_path / "other.txt"
    other.write_text("a\nsea\nc\n")
    with pytest.raises(LabelFileError, match=r"label 2 is 'sea', but in .* it is 'b'"):
        evaluate_saved_scores(path, labels=other)
    fewer = tmp_path / "fewer.txt"
    fewer.write_text("a\nb\n")
    with pytest.raises(LabelFileError, match=r"2 labels, but .* has scores for 3") as raised:
        evaluate_saved_scores(path, labels=fewer)
    assert raised.value.path == fewer
    same = tmp_path / "same.txt"
    same.write_text("A\n  b\nc\n")  # case and spacing do not matter
    assert evaluate_saved_scores(path, labels=same).report.images == 6


def test_calibration_summary_counts(tmp_path):
    path = save_handmade(tmp_path / "s.npz", HAND_SCORES, HAND_TARGETS, ["a", "b", "c"])
    settings = EvalSettings(
        calibrate=tmp_path / "t.tsv", min_positives=3, calibrate_fraction=0, ks=(1, 2, 1)
    )
    result = evaluate_saved_scores(path, settings=settings)
    calibrated = result.calibration
    assert calibrated is not None and calibrated.check is None and calibrated.check_skipped == ""
    written = calibrated.written
    # a has 3 positives (calibrated); b has 2 and c none: both on the pooled threshold
    assert (written.calibrated, written.unreachable, written.fallback, written.never) == (
        1,
        0,
        2,
        0,
    )
    assert math.isfinite(written.pooled_threshold)
    assert result.report.ks == [1, 2] and "calibration_check" not in result.report.extra
    assert result.files == [tmp_path / "t.tsv"]
    # precision 1 is out of reach for a (a negative outranks its positives); c falls back to
    # a pooled threshold, and none reaches precision 1 either: never predicted
    targets = np.int8(HAND_TARGETS)
    targets[0, 0], targets[1, 0] = -1, 1
    save_handmade(tmp_path / "u.npz", HAND_SCORES, targets, ["a", "b", "c"])
    strict = EvalSettings(
        calibrate=tmp_path / "u.tsv", target_precision=1.0, min_positives=1, calibrate_fraction=0
    )
    written = evaluate_saved_scores(tmp_path / "u.npz", settings=strict).calibration.written
    assert (written.calibrated, written.unreachable, written.fallback, written.never) == (
        1,
        1,
        1,
        2,
    )
    assert written.pooled_threshold == math.inf


def test_too_few_images_for_the_held_out_check(tmp_path):
    path = save_handmade(tmp_path / "s.npz", HAND_SCORES[:1], HAND_TARGETS[:1], ["a", "b", "c"])
    warned: list[str] = []
    result = evaluate_saved_scores(
        path, settings=EvalSettings(calibrate=tmp_path / "t.tsv"), on_warning=warned.append
    )
    calibrated = result.calibration
    assert calibrated is not None and calibrated.check is None
    assert "too few" in calibrated.check_skipped
    assert (tmp_path / "t.tsv").is_file() and "calibration_check" not in result.report.extra
    assert warned == result.warnings == []  # the reason is the result's, not a warning


def test_unreadable_images_are_left_out_and_returned(tmp_path):
    data = write_dataset(tmp_path, [*ROWS[:2], ("img/broken.jpg", "cat", ""), ROWS[3]])
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not a jpeg")
    progress: list[tuple[int, int]] = []
    result = evaluate_model(
        data,
        tmp_path / "labels.txt",
        model=str(TINY_CONFIG),
        scoring=ScoringSettings(batch_size=2, **SCORING),
        on_progress=lambda done, total: progress.append((done, total)),
    )
    (failure,) = result.failures
    assert isinstance(failure, ImageLoadError) and failure.path.name == "broken.jpg"
    assert result.report.images == 3 and result.report.failed_images == 1
    assert [Path(p).name for p in result.scores.paths] == ["0.jpg", "1.jpg", "3.jpg"]
    assert progress[-1] == (4, 4)
    assert [row.name for row in result.report.rows] == ["GZSL", "seen"]  # no --unseen


@pytest.mark.parametrize(
    "settings",
    [
        {"ks": (3, 0)},
        {"target_precision": 0.9},  # without a calibrate file
        {"calibrate": "t.tsv", "target_precision": 1.5},
        {"calibrate": "t.tsv", "calibrate_fraction": 1.0},
        {"min_positives": 0},
    ],
)
def test_bad_settings(settings):
    with pytest.raises(ValueError):
        EvalSettings(**settings)


def test_bad_streams():
    with pytest.raises(ValueError, match="streams"):
        ScoringSettings(streams="neither")
    assert ScoringSettings(streams="global").streams == "global"
