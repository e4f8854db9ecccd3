"""`mkt-tag eval` through CliRunner: tables, files, scores files, calibration, every error."""

from __future__ import annotations

import csv
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mkt_tag import thresholds as thresholds_module
from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, EXIT_PARTIAL, EXIT_USAGE
from mkt_tag.evaluate import calibration as calibration_module
from mkt_tag.evaluate import scores as evaluation
from mkt_tag.evaluate.calibration import calibrate_thresholds, pooled_threshold
from mkt_tag.evaluate.metrics import (
    average_precision,
    mean_average_precision,
    threshold_prf,
    top_k_prf,
)
from mkt_tag.thresholds import read_thresholds
from tests.conftest import TINY_CONFIG, make_photo

runner = CliRunner()

LABELS = ["cat", "dog", "beach", "sunset", "snow"]
UNSEEN = ["beach", "snow"]
# path, positives, unknown ("zebra" is not in the vocabulary: reported, ignored)
ROWS = [
    ("img/0.jpg", "cat|dog", ""),
    ("img/1.jpg", "dog", "beach"),
    ("img/2.jpg", "beach|zebra", ""),
    ("img/3.jpg", "cat", ""),
    ("img/4.jpg", "beach|sunset", ""),
    ("img/5.jpg", "dog|snow", ""),
    ("img/6.jpg", "cat|sunset", ""),
    ("img/7.jpg", "", ""),
    ("img/8.jpg", "snow|beach", "cat"),
    ("img/9.jpg", "sunset|dog", ""),
]


def invoke(*args: str | Path):
    return runner.invoke(app, ["eval", *map(str, args)])


def one_error_line(result, code: int = EXIT_ERROR) -> str:
    """The run failed with ``code`` and one clear line on stderr, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def row_names(stdout: str) -> list[str]:
    """The first word of each table line that holds numbers: the rows printed."""
    words = [line.split() for line in stdout.split("calibration:")[0].splitlines()]
    return [w[0] for w in words if len(w) > 2 and w[1].isdigit()]


def write_dataset(root: Path, rows=ROWS) -> Path:
    for number, (path, _, _) in enumerate(rows):
        make_photo(root / path, seed=number)
    data = root / "data.csv"
    with data.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "labels", "unknown"])
        writer.writerows(rows)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    (root / "unseen.txt").write_text("\n".join(UNSEEN) + "\n", encoding="utf-8")
    return data


@dataclass
class Evaluated:
    """One model run shared by the tests that only read its outputs (the slow part)."""

    root: Path
    result: object
    out: Path
    scores: Path
    thresholds: Path
    cache: Path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    root = tmp_path_factory.mktemp("eval")
    data = write_dataset(root)
    cache = root / "cache"
    result = invoke(
        "--data", data, "--labels", root / "labels.txt", "--unseen", root / "unseen.txt",
        "--model", TINY_CONFIG, "--out", root / "out", "--save-scores", root / "scores.npz",
        "--calibrate", root / "thresholds.tsv", "--min-positives", "1",
        "--workers", "0", "--cache-dir", cache,
    )  # fmt: skip
    return Evaluated(
        root, result, root / "out", root / "scores.npz", root / "thresholds.tsv", cache
    )


def stored(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def save_handmade(path: Path, scores, targets, labels, unseen=None) -> Path:
    scores = np.asarray(scores, dtype=np.float32)
    evaluation.save_scores(
        path,
        evaluation.ScoreSet(
            scores=scores,
            targets=np.asarray(targets, dtype=np.int8),
            labels=list(labels),
            paths=[f"img{i}.jpg" for i in range(len(scores))],
            unseen=np.zeros(len(labels), bool) if unseen is None else np.asarray(unseen),
            model="handmade",
        ),
    )
    return path


# --- a model run ------------------------------------------------------------------------


def test_run_prints_the_three_rows_and_reports_unknown_labels(evaluated):
    result = evaluated.result
    assert result.exit_code == 0, result.output
    table = result.stdout.split("calibration:")[0]
    assert row_names(result.stdout) == ["ZSL", "GZSL", "seen"]
    for name in ("mAP", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5"):
        assert name in table
    assert "mAP (ref)" not in table
    assert "10 images, 5 labels (2 unseen)" in table
    assert "'zebra'" in result.stderr  # a data label outside the vocabulary is reported
    assert "scored 10 images" in result.stderr


def test_scores_file_holds_plain_arrays(evaluated):
    arrays = stored(evaluated.scores)  # allow_pickle=False: nothing pickled in there
    assert arrays["scores"].dtype == np.float32 and arrays["scores"].shape == (10, 5)
    assert arrays["targets"].dtype == np.int8
    assert arrays["labels"].dtype.kind == "U" and list(arrays["labels"]) == LABELS
    assert [Path(p).name for p in arrays["paths"]] == [f"{i}.jpg" for i in range(10)]
    assert list(arrays["unseen"]) == [label in UNSEEN for label in LABELS]
    targets = arrays["targets"]
    assert targets[0].tolist() == [1, 1, -1, -1, -1]
    assert targets[1].tolist() == [-1, 1, 0, -1, -1]  # "unknown" entries are ignored (0)
    assert targets[8].tolist() == [0, -1, 1, -1, 1]
    assert str(arrays["model"]) == str(TINY_CONFIG)


def fused_again(arrays: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """A scores file's scores of the labels in ``mask`` with only them competing: MKT's
    fusion over their candidates, written plainly (one image and one label at a time)."""
    owner, streams = arrays["candidate_labels"], str(arrays["streams"])
    mine = np.flatnonzero(mask[owner])
    out = np.zeros((len(arrays["scores"]), int(mask.sum())), dtype=np.float32)
    for image in range(len(out)):
        parts = []
        for name, used in (("global_scores", "global"), ("local_scores", "local")):
            if streams in ("both", used):
                values = arrays[name][image, mine].astype(np.float64)
                parts.append(values / np.linalg.norm(values))
        fused = sum(parts) / len(parts)
        for column, label in enumerate(np.flatnonzero(mask)):
            out[image, column] = fused[owner[mine] == label].max()
    return out


def test_metrics_json_matches_metrics_on_the_saved_scores(evaluated):
    """Each row ranks its own labels' scores fused over them alone (the paper's protocol);
    the GZSL row's are the scores `tag` gives, fused over every label."""
    metrics = json.loads((evaluated.out / "metrics.json").read_text())
    arrays = stored(evaluated.scores)
    targets, unseen = arrays["targets"], arrays["unseen"]
    assert metrics["images"] == 10 and metrics["labels"] == 5 and metrics["unseen_labels"] == 2
    assert metrics["failed_images"] == 0 and metrics["ks"] == [3, 5]
    assert metrics["fusion"] == "row labels"
    assert list(metrics["rows"]) == ["ZSL", "GZSL", "seen"]
    for name, mask in (("ZSL", unseen), ("GZSL", np.ones(5, bool)), ("seen", ~unseen)):
        row = metrics["rows"][name]
        scores = fused_again(arrays, mask)
        if name == "GZSL":
            np.testing.assert_allclose(scores, arrays["scores"], rtol=0, atol=1e-6)
        ap = average_precision(scores, targets[:, mask]).ap
        assert row["labels"] == mask.sum()
        assert row["map"] == pytest.approx(mean_average_precision(ap), abs=1e-12)
        assert "map_reference" not in row
        expected = top_k_prf(scores, targets[:, mask], (3, 5))
        for k in (3, 5):
            assert row["at_k"][str(k)]["true_positives"] == expected[k].true_positives
            assert row["at_k"][str(k)]["predicted"] == expected[k].predicted
            assert row["at_k"][str(k)]["f1"] == pytest.approx(expected[k].f1, abs=1e-12)
    # fusing over fewer labels changes the scores, and here the ZSL mAP
    all_labels = average_precision(arrays["scores"], targets).ap
    zsl = metrics["rows"]["ZSL"]["map"]
    assert zsl != pytest.approx(mean_average_precision(all_labels[unseen]), abs=1e-6)
    # the table shows the same numbers, in percent
    assert f"{100 * metrics['rows']['GZSL']['map']:.2f}" in evaluated.result.stdout


def test_per_label_csv(evaluated):
    """``ap``: in the label's own row (ZSL or seen); ``ap_gzsl``: among all labels."""
    rows = list(csv.DictReader((evaluated.out / "per_label.csv").open(encoding="utf-8")))
    arrays = stored(evaluated.scores)
    unseen = arrays["unseen"]
    own = np.zeros(len(LABELS))
    for mask in (unseen, ~unseen):
        own[mask] = average_precision(fused_again(arrays, mask), arrays["targets"][:, mask]).ap
    every = average_precision(fused_again(arrays, np.ones(5, bool)), arrays["targets"]).ap
    assert [row["label"] for row in rows] == LABELS
    assert [row["kind"] for row in rows] == ["seen", "seen", "unseen", "seen", "unseen"]
    assert [int(row["positives"]) for row in rows] == [3, 4, 3, 3, 2]
    assert [float(row["ap"]) for row in rows] == pytest.approx(own.tolist(), abs=1e-12)
    assert [float(row["ap_gzsl"]) for row in rows] == pytest.approx(every.tolist(), abs=1e-12)


def test_report_png_is_a_png(evaluated):
    png = evaluated.out / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 800 and image.height > 600


def test_scores_match_the_tagger(evaluated):
    """The saved scores, which --calibrate chooses thresholds on, are those `tag` compares
    thresholds with, bit for bit: every label of the vocabulary competes in both."""
    from mkt_tag.tagging.tagger import Tagger

    tagger = Tagger.load(str(TINY_CONFIG), cache_dir=evaluated.cache)
    paths = [evaluated.root / "img" / f"{i}.jpg" for i in (0, 5, 9)]
    expected = tagger.scores(paths, LABELS)
    assert np.array_equal(stored(evaluated.scores)["scores"][[0, 5, 9]], expected)


def test_saved_scores_give_the_same_metrics_without_a_model(evaluated, tmp_path):
    result = invoke(
        "--scores", evaluated.scores, "--model", "no-such-model:anywhere", "--out", tmp_path
    )
    assert result.exit_code == 0, result.output
    assert "not used" in result.stderr  # the bogus model is never loaded
    before = json.loads((evaluated.out / "metrics.json").read_text())
    after = json.loads((tmp_path / "metrics.json").read_text())
    assert after["rows"] == before["rows"]
    assert after["model"] == str(TINY_CONFIG) and after["source"] == str(evaluated.scores)
    assert (tmp_path / "per_label.csv").read_text() == (evaluated.out / "per_label.csv").read_text()
    # the same bogus model fails where the model is needed
    again = invoke(
        "--data", evaluated.root / "data.csv", "--labels", evaluated.root / "labels.txt",
        "--model", "no-such-model:anywhere", "--cache-dir", evaluated.cache,
    )  # fmt: skip
    assert "no-such-model" in one_error_line(again)


def test_streams_override_scores_one_stream(evaluated, tmp_path):
    from mkt_tag.tagging.tagger import Tagger

    common = (
        "--data", evaluated.root / "data.csv", "--labels", evaluated.root / "labels.txt",
        "--model", TINY_CONFIG, "--workers", "0", "--cache-dir", evaluated.cache,
    )  # fmt: skip
    # a plain backbone scores with its class token ("global"): override with the other stream
    result = invoke(*common, "--streams", "local", "--save-scores", tmp_path / "l.npz")
    assert result.exit_code == 0, result.output
    saved = stored(tmp_path / "l.npz")["scores"]
    tagger = Tagger.load(str(TINY_CONFIG), cache_dir=evaluated.cache)
    assert tagger.model.config.streams == "global"
    tagger.model.config.streams = "local"
    paths = [evaluated.root / "img" / f"{i}.jpg" for i in (1, 4)]
    assert np.allclose(saved[[1, 4]], tagger.scores(paths, LABELS), atol=1e-5)
    assert not np.allclose(saved, stored(evaluated.scores)["scores"], atol=1e-3)
    bad = invoke(*common, "--streams", "neither")
    assert bad.exit_code == EXIT_USAGE and "Traceback" not in bad.output
    ignored = invoke("--scores", evaluated.scores, "--streams", "local", "-o", tmp_path / "s")
    assert ignored.exit_code == 0 and "--streams is not used" in ignored.stderr


def test_without_unseen_there_is_no_zsl_row(evaluated, tmp_path):
    result = invoke(
        "--data", evaluated.root / "data.csv", "--labels", evaluated.root / "labels.txt",
        "--model", TINY_CONFIG, "--workers", "0", "--cache-dir", evaluated.cache,
        "--out", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert row_names(result.stdout) == ["GZSL", "seen"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["rows"]) == ["GZSL", "seen"] and metrics["unseen_labels"] == 0
    assert metrics["rows"]["GZSL"]["map"] == metrics["rows"]["seen"]["map"]


def test_unseen_given_with_saved_scores(evaluated, tmp_path):
    (tmp_path / "u.txt").write_text("DOG\n")  # any case or spacing
    result = invoke("--scores", evaluated.scores, "--unseen", tmp_path / "u.txt", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["rows"]["ZSL"]["labels"] == 1 and metrics["rows"]["seen"]["labels"] == 4


def test_a_checkpoint_is_evaluated_like_a_backbone(evaluated, tiny_id, tmp_path):
    import torch

    from mkt_tag import checkpoints
    from mkt_tag.tagging.tagger import Tagger

    model = checkpoints.load(tiny_id)
    with torch.no_grad():
        model.clip.visual.proj.mul_(-1.0)
    checkpoints.save(model, tmp_path / "best", trained=["clip.visual.proj"])
    runs = {}
    for name, model_id in (("backbone", tiny_id), ("checkpoint", tmp_path / "best")):
        result = invoke(
            "--data", evaluated.root / "data.csv", "--labels", evaluated.root / "labels.txt",
            "--model", model_id, "--workers", "0", "--cache-dir", evaluated.cache,
            "--save-scores", tmp_path / name / "scores.npz",  # a folder that does not exist yet
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        runs[name] = stored(tmp_path / name / "scores.npz")["scores"]
    assert not np.allclose(runs["backbone"], runs["checkpoint"])
    tagger = Tagger.load(tmp_path / "best", cache_dir=evaluated.cache)
    expected = tagger.scores([evaluated.root / "img" / "3.jpg"], LABELS)
    assert np.allclose(runs["checkpoint"][3], expected[0], atol=1e-5)


def test_bad_image_is_reported_and_left_out(tmp_path):
    rows = [*ROWS[:2], ("img/broken.jpg", "cat", ""), *ROWS[2:5]]
    data = write_dataset(tmp_path, rows)
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = invoke(
        "--data", data, "--labels", tmp_path / "labels.txt", "--model", TINY_CONFIG,
        "--workers", "2", "--batch-size", "2",  # decoding processes, several batches
        "--save-scores", tmp_path / "s.npz", "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "broken.jpg" in result.stderr and "1 could not be read" in result.stderr
    arrays = stored(tmp_path / "s.npz")
    names = ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert [Path(p).name for p in arrays["paths"]] == names
    assert arrays["targets"][2].tolist() == [-1, -1, 1, -1, -1]  # 2.jpg (after broken): beach
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["images"] == 5 and metrics["failed_images"] == 1


# --- options on saved scores (no model) --------------------------------------------------

# 6 images x 3 labels; "c" has no positive at all
HAND_SCORES = [
    [0.9, 0.1, 0.5],
    [0.8, 0.7, 0.2],
    [0.3, 0.6, 0.4],
    [0.2, 0.9, 0.1],
    [0.7, 0.2, 0.3],
    [0.1, 0.3, 0.8],
]
HAND_TARGETS = [
    [1, -1, -1],
    [-1, 1, -1],
    [1, -1, -1],
    [-1, 1, -1],
    [1, -1, -1],
    [-1, -1, -1],
]


def test_reference_map(tmp_path):
    path = save_handmade(tmp_path / "s.npz", HAND_SCORES, HAND_TARGETS, ["a", "b", "c"])
    plain = invoke("--scores", path, "-o", tmp_path / "plain")
    ref = invoke("--scores", path, "--reference-map", "-o", tmp_path / "ref")
    assert plain.exit_code == 0 and ref.exit_code == 0, ref.output
    assert "mAP (ref)" in ref.stdout and "mAP (ref)" not in plain.stdout
    assert "1 label(s) without a positive" in ref.stderr
    gzsl = json.loads((tmp_path / "ref" / "metrics.json").read_text())["rows"]["GZSL"]
    ap = average_precision(np.float32(HAND_SCORES), np.int8(HAND_TARGETS)).ap
    assert gzsl["labels_with_positives"] == 2
    assert gzsl["map"] == pytest.approx((ap[0] + ap[1]) / 2)
    assert gzsl["map_reference"] == pytest.approx((ap[0] + ap[1]) / 3)
    assert gzsl["map_reference"] < gzsl["map"]
    assert (
        "map_reference"
        not in json.loads((tmp_path / "plain" / "metrics.json").read_text())["rows"]["GZSL"]
    )
    per_label = (tmp_path / "ref" / "per_label.csv").read_text().splitlines()
    assert per_label[3] == "c,,0,seen,"  # no positive: no AP, in its row nor among all


def test_k_options(tmp_path):
    path = save_handmade(tmp_path / "s.npz", HAND_SCORES, HAND_TARGETS, ["a", "b", "c"])
    result = invoke("--scores", path, "--k", "1", "--k", "2", "--k", "1", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "P@1" in result.stdout and "F1@2" in result.stdout and "P@3" not in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["ks"] == [1, 2]
    at_1 = metrics["rows"]["GZSL"]["at_k"]["1"]
    # each image's best label: a+, a-, b-, b+, a+, c-: 3 hits of 6 predictions, 5 positives
    assert (at_1["true_positives"], at_1["predicted"], at_1["positives"]) == (3, 6, 5)
    assert invoke("--scores", path, "--k", "0").exit_code == EXIT_USAGE


# --- calibration --------------------------------------------------------------------------


def test_calibration_file_round_trips_through_tag(evaluated, tmp_path):
    assert evaluated.result.exit_code == 0, evaluated.result.output
    thresholds = read_thresholds(evaluated.thresholds)
    assert list(thresholds) == LABELS
    text = evaluated.thresholds.read_text()
    assert text.startswith("# per-label thresholds from mkt-tag eval: maximise F1, on 10 images")
    arrays = stored(evaluated.scores)
    chosen = calibrate_thresholds(arrays["scores"], arrays["targets"], min_positives=1)
    assert [thresholds[label] for label in LABELS] == chosen.thresholds.tolist()  # exact
    out = tmp_path / "tags.json"
    result = runner.invoke(
        app,
        [
            "tag", str(evaluated.root / "img"), "--labels", str(evaluated.root / "labels.txt"),
            "--thresholds", str(evaluated.thresholds), "--model", str(TINY_CONFIG),
            "--workers", "0", "-o", str(out), "--cache-dir", str(evaluated.cache),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tagged = {
        Path(r["path"]).name: {t["label"] for t in r["tags"]} for r in json.loads(out.read_text())
    }
    limits = np.array([thresholds[label] for label in LABELS])
    for path, row in zip(arrays["paths"], arrays["scores"], strict=True):
        expected = {label for label, s, t in zip(LABELS, row, limits, strict=True) if s >= t}
        assert tagged[Path(path).name] == expected, path
    # every calibrated threshold is a positive's score: that image keeps the tag
    assert sum(len(tags) for tags in tagged.values()) >= len(LABELS)


def test_held_out_report(evaluated):
    stdout = evaluated.result.stdout
    assert "calibration: chosen on 5 images, measured on 5 others" in stdout
    for name in ("per-label thresholds", "one global threshold", "top-3", "top-5"):
        assert name in stdout
    assert f"wrote {evaluated.thresholds}, 5 labels: 5 calibrated" in stdout
    check = json.loads((evaluated.out / "metrics.json").read_text())["calibration_check"]
    arrays = stored(evaluated.scores)
    order = np.random.default_rng(calibration_module.SPLIT_SEED).permutation(10)
    fit, test = np.sort(order[5:]), np.sort(order[:5])
    scores, targets = arrays["scores"], arrays["targets"]
    chosen = calibrate_thresholds(scores[fit], targets[fit], min_positives=1).thresholds
    per_label = threshold_prf(scores[test], targets[test], chosen).micro()
    assert check["per_label_thresholds"]["true_positives"] == per_label.true_positives
    assert check["per_label_thresholds"]["predicted"] == per_label.predicted
    best = pooled_threshold(scores[fit], targets[fit])
    assert check["global_threshold"] == best
    at_best = threshold_prf(scores[test], targets[test], best).micro()
    assert check["at_global_threshold"]["true_positives"] == at_best.true_positives
    top3 = top_k_prf(scores[test], targets[test], (3,))[3]
    assert check["top_k"]["3"]["true_positives"] == top3.true_positives


def test_no_held_out_report_with_fraction_zero(tmp_path):
    path = save_handmade(tmp_path / "s.npz", HAND_SCORES, HAND_TARGETS, ["a", "b", "c"])
    result = invoke(
        "--scores", path, "--calibrate", tmp_path / "new" / "t.tsv", "--calibrate-fraction", "0",
        "-o", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "calibration:" not in result.stdout
    assert "calibration_check" not in json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "new" / "t.tsv").is_file()  # missing folders are made


def test_target_precision_and_never_predicted_labels(tmp_path):
    from mkt_tag.tagging.tagger import Selection, select

    path = save_handmade(tmp_path / "s.npz", HAND_SCORES, HAND_TARGETS, ["a", "b", "c"])
    out = tmp_path / "t.tsv"
    result = invoke(
        "--scores", path, "--calibrate", out, "--target-precision", "1.0",
        "--min-positives", "1", "--calibrate-fraction", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    thresholds = read_thresholds(out)  # finite numbers only: the file must read back
    # a: 0.9+ then 0.8-: precision 1 only at 0.9; b: 0.9+, 0.7+ then 0.6-: 0.7 (most recall);
    # c has no positive: the pooled threshold, where 0.9 (a+, b+) is the last at precision 1
    expected = calibrate_thresholds(
        np.float32(HAND_SCORES), np.int8(HAND_TARGETS), target_precision=1.0, min_positives=1
    )
    assert thresholds["a"] == pytest.approx(0.9) and thresholds["b"] == pytest.approx(0.7)
    assert thresholds["c"] == pytest.approx(0.9)
    for label, value in zip("abc", expected.thresholds, strict=True):
        assert thresholds[label] == (value if math.isfinite(value) else thresholds_module.NEVER)
    assert "reach precision 1.0" in out.read_text()
    # unreachable: label a needs precision 1 but a negative outranks every positive
    targets = np.int8(HAND_TARGETS)
    targets[0, 0], targets[1, 0] = -1, 1  # a: 0.9-, 0.8+: precision 1 is out of reach
    save_handmade(tmp_path / "u.npz", HAND_SCORES, targets, ["a", "b", "c"])
    result = invoke(
        "--scores", tmp_path / "u.npz", "--calibrate", out, "--target-precision", "1",
        "--min-positives", "1", "--calibrate-fraction", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "a\t1e+308" in out.read_text().splitlines()
    assert (
        "3 labels: 1 calibrated, 1 cannot reach precision 1.0, 1 with < 1 positives on the "
        "global threshold (none: no threshold serves); 2 never predicted (1e+308)"
    ) in result.stdout
    thresholds = read_thresholds(out)
    assert thresholds["a"] == thresholds_module.NEVER
    tags = select(
        np.float32([[1e30, 0.5, 0.5]]), ["a", "b", "c"], Selection(None, None, thresholds)
    )
    assert "a" not in [t.label for t in tags[0]]


def test_labels_with_few_positives_fall_back_to_the_global_threshold(tmp_path):
    path = save_handmade(tmp_path / "s.npz", HAND_SCORES, HAND_TARGETS, ["a", "b", "c"])
    out = tmp_path / "t.tsv"
    result = invoke(
        "--scores", path, "--calibrate", out, "--min-positives", "3", "--calibrate-fraction", "0"
    )
    assert result.exit_code == 0, result.output
    # a has 3 positives (calibrated); b has 2 and c none: both get the pooled threshold
    assert "3 labels: 1 calibrated, 2 with < 3 positives on the global threshold (" in result.stdout
    thresholds = read_thresholds(out)
    pooled = pooled_threshold(np.float32(HAND_SCORES), np.int8(HAND_TARGETS))
    assert thresholds["b"] == thresholds["c"] == pooled


# --- errors ---------------------------------------------------------------------------------


def test_label_count_mismatch(evaluated, tmp_path):
    fewer = tmp_path / "fewer.txt"
    fewer.write_text("cat\ndog\n")
    line = one_error_line(invoke("--scores", evaluated.scores, "--labels", fewer))
    assert "2 labels" in line and "scores for 5" in line and str(fewer) in line
    other = tmp_path / "other.txt"
    other.write_text("cat\ndog\nsea\nsunset\nsnow\n")
    line = one_error_line(invoke("--scores", evaluated.scores, "--labels", other))
    assert "label 3 is 'sea'" in line and "'beach'" in line
    same = tmp_path / "same.txt"
    same.write_text("Cat\ndog\nbeach\nsunset\nsnow\n")  # case does not matter
    assert invoke("--scores", evaluated.scores, "--labels", same).exit_code == 0


def test_unseen_labels_must_be_in_the_vocabulary(evaluated, tmp_path):
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("beach\nunicorn\n")
    data, labels = evaluated.root / "data.csv", evaluated.root / "labels.txt"
    result = invoke("--data", data, "--labels", labels, "--unseen", unseen, "--model", TINY_CONFIG)
    line = one_error_line(result)
    assert "'unicorn'" in line and str(unseen) in line and "not in" in line
    line = one_error_line(invoke("--scores", evaluated.scores, "--unseen", unseen))
    assert "'unicorn'" in line


def test_empty_data(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\n")
    (tmp_path / "data.csv").write_text("path,labels\n")
    data, labels = tmp_path / "data.csv", tmp_path / "labels.txt"
    line = one_error_line(invoke("--data", data, "--labels", labels, "--model", TINY_CONFIG))
    assert "no usable labelled images" in line and "data.csv" in line


def test_no_image_can_be_read(tmp_path):
    write_dataset(tmp_path, [("img/0.jpg", "cat", "")])
    (tmp_path / "img" / "0.jpg").write_bytes(b"garbage")
    data, labels = tmp_path / "data.csv", tmp_path / "labels.txt"
    result = invoke("--data", data, "--labels", labels, "--model", TINY_CONFIG, "--workers", "0")
    line = one_error_line(result)
    assert "no image could be read" in line


def test_unreadable_scores_files(evaluated, tmp_path):
    line = one_error_line(invoke("--scores", tmp_path / "missing.npz"))
    assert "file not found" in line
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00\x01 not a zip file")
    assert "not an .npz scores file" in one_error_line(invoke("--scores", garbage))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, other=np.zeros(3))
    assert "no scores, targets, labels, paths, unseen" in one_error_line(
        invoke("--scores", foreign)
    )
    pickled = tmp_path / "pickled.npz"
    arrays = stored(evaluated.scores)
    np.savez(pickled, **{**arrays, "labels": np.array(LABELS, dtype=object)})
    assert "cannot read" in one_error_line(invoke("--scores", pickled))
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, **{**arrays, "targets": arrays["targets"][:3]})
    assert "targets must be integers of shape" in one_error_line(invoke("--scores", mismatched))
    nan = tmp_path / "nan.npz"
    np.savez(nan, **{**arrays, "scores": np.full_like(arrays["scores"], np.nan)})
    assert "NaN" in one_error_line(invoke("--scores", nan))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(evaluated.scores.read_bytes()[:-200])
    assert str(truncated) in one_error_line(invoke("--scores", truncated))
    assert zipfile.is_zipfile(evaluated.scores)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --data and --labels"),
        (["--data", "d.csv"], "give --data and --labels"),
        (["--scores", "s.npz", "--data", "d.csv"], "--scores replaces --data"),
        (["--scores", "s.npz", "--save-scores", "t.npz"], "--save-scores needs a model run"),
        (["--scores", "s.npz", "--target-precision", "0.9"], "goes with --calibrate"),
        (["--scores", "s.npz", "--calibrate", "t.tsv", "--target-precision", "1.5"], "(0, 1]"),
        (["--scores", "s.npz", "--calibrate", "t.tsv", "--calibrate-fraction", "1"], "[0, 1)"),
    ],
)
def test_usage_errors(args, message):
    assert message in one_error_line(invoke(*args), EXIT_USAGE)


def test_out_folder_that_cannot_be_made(evaluated, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = one_error_line(invoke("--scores", evaluated.scores, "--out", blocker))
    assert str(blocker) in line


def test_help_has_an_example():
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout and "--calibrate" in result.stdout
