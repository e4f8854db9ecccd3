"""Fault injection on per-label thresholds (issue "Nothing lost and nothing silently wrong",
item 4): thresholds applied to another model or vocabulary, and files that cover only some
labels. One test per fault; each docstring names it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mkt_tag import checkpoints
from mkt_tag.cli import app
from mkt_tag.errors import EXIT_ERROR, LabelFileError
from mkt_tag.evaluate import scores as evaluation
from mkt_tag.tagging.selection import (
    DEFAULT_TOP_K,
    Selection,
    check_thresholds_model,
    select,
    selection_for,
)
from mkt_tag.tagging.tagger import Tagger
from mkt_tag.thresholds import labels_fingerprint, read_thresholds_file, write_thresholds
from mkt_tag.vocab import read_labels
from tests.conftest import TINY_CONFIG, make_photo

runner = CliRunner()

LABELS = ["cat", "dog", "beach", "sunset", "car", "tree", "snow", "boat", "bird", "sky", "road"]


def write_labels(path: Path, labels: list[str] = LABELS) -> Path:
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")
    return path


def calibrated_by_eval(tmp_path: Path, *extra: str) -> tuple[Path, object]:
    """A thresholds file from `mkt-tag eval --calibrate` on a tiny labelled set."""
    rows = []
    for i in range(8):
        make_photo(tmp_path / "img" / f"{i}.jpg", seed=i)
        rows.append(f"img/{i}.jpg,{LABELS[i % 3]}|{LABELS[3 + i % 4]}")
    data = tmp_path / "data.csv"
    data.write_text("path,labels\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "thresholds.tsv"
    result = runner.invoke(
        app,
        [
            "eval", "--data", str(data), "--labels", str(write_labels(tmp_path / "labels.txt")),
            "--model", str(TINY_CONFIG), "--calibrate", str(out), "--min-positives", "1",
            "--calibrate-fraction", "0", "--workers", "0", *extra,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result


def test_eval_hint_names_the_model_and_label_file(tmp_path):
    """Fault: `eval --calibrate` printed a `use it:` hint without --model."""
    out, result = calibrated_by_eval(tmp_path)
    hint = [line for line in result.stdout.splitlines() if line.startswith("use it:")]
    assert len(hint) == 1
    words = shlex.split(hint[0].removeprefix("use it:"))
    assert words[words.index("--model") + 1] == str(TINY_CONFIG)
    assert words[words.index("--labels") + 1] == str(tmp_path / "labels.txt")
    assert words[words.index("--thresholds") + 1] == str(out)


def test_eval_hint_from_saved_scores_names_their_model(tmp_path):
    """The same hint for `eval --scores FILE.npz`: the model the scores were made with."""
    path = tmp_path / "s.npz"
    evaluation.save_scores(
        path,
        evaluation.ScoreSet(
            scores=np.float32([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]]),
            targets=np.int8([[1, -1], [-1, 1], [1, 1]]),
            labels=["a", "b"],
            paths=["0.jpg", "1.jpg", "2.jpg"],
            unseen=np.zeros(2, bool),
            model="runs/my model/best",
        ),
    )
    out = tmp_path / "t.tsv"
    result = runner.invoke(
        app,
        ["eval", "--scores", str(path), "--calibrate", str(out), "--min-positives", "1",
         "--calibrate-fraction", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    hint = next(line for line in result.stdout.splitlines() if line.startswith("use it:"))
    assert "--model 'runs/my model/best'" in hint
    recorded = read_thresholds_file(out)
    assert recorded.model == "runs/my model/best" and recorded.model_fingerprint == ""
    assert recorded.vocabulary == labels_fingerprint(["a", "b"])


def test_thresholds_file_records_the_model_and_vocabulary(tmp_path):
    """Fault: the thresholds file did not record which model and labels it was made for."""
    out, _ = calibrated_by_eval(tmp_path)
    recorded = read_thresholds_file(out)
    tagger = Tagger.load(str(TINY_CONFIG), device="cpu", precision="fp32")
    assert recorded.model == str(TINY_CONFIG)
    assert recorded.model_fingerprint == tagger.scores_fingerprint != ""
    assert recorded.vocabulary == labels_fingerprint(LABELS)
    assert recorded.vocabulary_size == len(LABELS)
    assert set(recorded.thresholds) == set(LABELS)
    # the same model, named differently, passes the check with no note
    assert check_thresholds_model(out, "another/name", tagger.scores_fingerprint) == []


def test_thresholds_of_another_model_are_refused_unless_forced(tmp_path):
    """Fault: `tag --thresholds` did not compare the model recorded in the file with the
    model in use: thresholds calibrated for one model were applied to another."""
    out, _ = calibrated_by_eval(tmp_path)
    other = checkpoints.load(str(TINY_CONFIG))
    other.prompt.prefix.data.add_(0.5)  # trained further: another model
    checkpoints.save(other, tmp_path / "ckpt")
    tagger = Tagger.load(str(tmp_path / "ckpt"), device="cpu", precision="fp32")
    with pytest.raises(LabelFileError, match="calibrated for another model") as error:
        check_thresholds_model(out, str(tmp_path / "ckpt"), tagger.scores_fingerprint)
    assert str(out) in str(error.value) and "--force-thresholds" in str(error.value)
    notes = check_thresholds_model(out, str(tmp_path / "ckpt"), tagger.scores_fingerprint, True)
    assert len(notes) == 1 and "calibrated for another model" in notes[0]


def test_eval_streams_make_another_model(tmp_path):
    """Thresholds calibrated on other scores than `tag` gives (--streams both, where a plain
    backbone tags with its class token alone) do not fit them: a different fingerprint; the
    same scores `tag --streams both` gives do."""
    out, _ = calibrated_by_eval(tmp_path, "--streams", "both")
    tagger = Tagger.load(str(TINY_CONFIG), device="cpu", precision="fp32")
    with pytest.raises(LabelFileError, match="calibrated for another model"):
        check_thresholds_model(out, str(TINY_CONFIG), tagger.scores_fingerprint)
    fused = Tagger.load(str(TINY_CONFIG), device="cpu", precision="fp32", streams="both")
    assert check_thresholds_model(out, str(TINY_CONFIG), fused.scores_fingerprint) == []


def test_model_named_differently_without_fingerprint_warns(tmp_path):
    """A file that names a model but has no fingerprint (made from saved scores): a different
    name cannot prove another model, so a warning, not a refusal."""
    path = tmp_path / "t.tsv"
    write_thresholds(path, ["cat"], [0.5], model="ViT-L-14:openai")
    notes = check_thresholds_model(path, "ViT-B-16:openai", "f" * 32)
    assert len(notes) == 1 and "ViT-L-14:openai" in notes[0] and "ViT-B-16:openai" in notes[0]
    assert check_thresholds_model(path, "ViT-L-14:openai", "f" * 32) == []


def test_files_without_header_stay_readable_and_unchecked(tmp_path):
    """A hand-written file (no header lines) reads as before and is never refused."""
    path = tmp_path / "t.tsv"
    path.write_text("# mine\ncat\t0.5\ndog\t0.25\n", encoding="utf-8")
    recorded = read_thresholds_file(path)
    assert recorded.thresholds == {"cat": 0.5, "dog": 0.25}
    assert recorded.model == recorded.model_fingerprint == recorded.vocabulary == ""
    assert check_thresholds_model(path, "ViT-B-16:openai", "f" * 32) == []


def test_partial_file_keeps_the_top_k_cap_for_labels_without_a_threshold(tmp_path):
    """Fault: a thresholds file covering some labels silently dropped the top-5 cap for the
    others: every other label was tagged on every image (11 tags printed)."""
    folder = tmp_path / "photos"
    for i in range(4):
        make_photo(folder / f"{i}.jpg", seed=i)
    labels = write_labels(tmp_path / "labels.txt")
    thresholds = tmp_path / "t.tsv"
    thresholds.write_text("cat\t-100\n", encoding="utf-8")  # cat always passes
    common = ["--labels", str(labels), "--model", str(TINY_CONFIG), "--workers", "0"]
    plain = tmp_path / "plain.json"
    result = runner.invoke(app, ["tag", str(folder), *common, "-o", str(plain)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "t.json"
    result = runner.invoke(
        app, ["tag", str(folder), *common, "-o", str(out), "--thresholds", str(thresholds)]
    )
    assert result.exit_code == 0, result.output
    assert "no threshold for 10 of 11 labels" in result.stderr
    assert f"only when among an image's {DEFAULT_TOP_K} best" in result.stderr
    for top, tagged in zip(json.loads(plain.read_text()), json.loads(out.read_text()), strict=True):
        best = {t["label"] for t in top["tags"]}  # the top 5 of a run without thresholds
        assert len(best) == DEFAULT_TOP_K
        assert {t["label"] for t in tagged["tags"]} == best | {"cat"}


def test_select_ranks_labels_without_threshold_among_all_labels():
    """The rule for labels without a threshold, on scores: only among the image's K best."""
    scores = np.float32([[0.9, 0.8, 0.7, 0.6, 0.5, 0.1]])
    labels = ["a", "b", "c", "d", "e", "f"]
    # f has a threshold it passes; b..e have none: only those ranked in the top 2 are kept
    chosen = select(scores, labels, Selection(None, None, {"f": 0.0, "a": 0.95}, 2))
    assert [t.label for t in chosen[0]] == ["b", "f"]
    # a global threshold serves labels without their own: no rank rule then
    chosen = select(scores, labels, Selection(None, 0.65, {"f": 0.0}, 2))
    assert [t.label for t in chosen[0]] == ["a", "b", "c", "f"]
    # --top-k caps the whole list, as documented
    chosen = select(scores, labels, Selection(1, None, {"f": 0.0}, 1))
    assert [t.label for t in chosen[0]] == ["a"]


def test_thresholds_of_another_vocabulary_warn(tmp_path):
    """A file calibrated on another label list: the scores' scale changed, warn once."""
    path = tmp_path / "t.tsv"
    write_thresholds(path, ["cat", "dog", "owl"], [0.1, 0.2, 0.3])
    vocabulary = read_labels(write_labels(tmp_path / "labels.txt", ["cat", "dog"]))
    _, notes = selection_for(vocabulary, thresholds_file=path)
    assert sum("calibrated on another vocabulary (3 labels;" in note for note in notes) == 1
    same = read_labels(write_labels(tmp_path / "same.txt", ["Owl", "cat", "dog"]))
    _, notes = selection_for(same, thresholds_file=path)
    assert notes == []  # order and case do not matter


def test_tag_refuses_thresholds_of_another_model_on_the_command_line(tmp_path):
    """Fault: `tag --thresholds` applied thresholds calibrated for another model, exit 0."""
    out, _ = calibrated_by_eval(tmp_path)
    other = checkpoints.load(str(TINY_CONFIG))
    other.prompt.prefix.data.add_(0.5)
    checkpoints.save(other, tmp_path / "ckpt")
    args = ["tag", str(tmp_path / "img"), "--labels", str(tmp_path / "labels.txt")]
    args += ["--model", str(tmp_path / "ckpt"), "--thresholds", str(out), "--workers", "0"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == EXIT_ERROR and "Traceback" not in refused.output
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "calibrated for another model" in errors[0]
    assert refused.stdout == ""  # nothing tagged
    forced = runner.invoke(app, [*args, "--force-thresholds"])
    assert forced.exit_code == 0, forced.output
    assert forced.stderr.count("calibrated for another model") == 1
