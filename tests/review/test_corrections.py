"""The corrections file: what it holds, that it is rewritten whole at each decision, that a
review resumes from it, and that `datasets.load` reads it as training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mkt_tag import datasets
from mkt_tag.errors import InputFileError, OutputError
from mkt_tag.review import open_review
from mkt_tag.review.corrections import Corrections, Decisions, corrections_path
from tests.review.conftest import LABELS, photo_id


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_beside_the_results_or_inside_a_folder(tmp_path):
    assert corrections_path(tmp_path / "tags.csv") == tmp_path / "tags.corrections.jsonl"
    assert corrections_path(tmp_path) == tmp_path / "mkt-tag.corrections.jsonl"


def test_every_decision_is_in_the_file_at_once(review, tagged):
    path = tagged["root"] / "tags.corrections.jsonl"
    a, c = photo_id(review, "a.jpg"), photo_id(review, "c.jpg")
    review.decide(a, "beach", "reject")
    assert lines(path) == [
        {
            "path": str(tagged["folder"] / "a.jpg"),
            "labels": [],
            "negatives": ["beach"],
            "unknown": "*",
        }
    ]
    review.decide(a, "dog", "accept")
    review.decide(a, "sunset", "accept")  # added from the vocabulary
    review.mark_reviewed(c)
    rows = lines(path)
    assert [Path(row["path"]).name for row in rows] == ["a.jpg", "c.jpg"]
    assert rows[0]["labels"] == ["dog", "sunset"] and rows[0]["negatives"] == ["beach"]
    assert rows[1] == {
        "path": str(tagged["folder"] / "c.jpg"),
        "labels": ["sunset", "dog"],  # the model's tags nobody rejected, best first
        "negatives": [],
        "unknown": [],
    }
    review.decide(a, "beach", "clear")
    review.decide(a, "dog", "clear")
    review.decide(a, "sunset", "clear")
    assert [Path(row["path"]).name for row in lines(path)] == ["c.jpg"]  # nothing left: no row


def test_a_review_resumes_from_the_file(review, tagged):
    a = photo_id(review, "a.jpg")
    review.decide(a, "beach", "reject")
    review.decide(a, "CAT", "accept")  # any spelling of a vocabulary label: the label
    again = open_review(tagged["results"], tagged["labels"])
    assert again.photo(a)["tags"] == [
        {"label": "dog", "score": 0.91, "verdict": ""},
        {"label": "beach", "score": 0.42, "verdict": "rejected"},
        {"label": "cat", "score": None, "verdict": "added"},
    ]


def test_rows_of_other_photos_are_kept(review, tagged):
    path = tagged["root"] / "tags.corrections.jsonl"
    other = {"path": "/elsewhere/z.jpg", "labels": ["cat"], "negatives": [], "unknown": []}
    path.write_text(json.dumps(other) + "\n", encoding="utf-8")
    again = open_review(tagged["results"], tagged["labels"])
    again.decide(photo_id(again, "b.png"), "cat", "reject")
    assert other in lines(path)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("not json", "line 1: not a corrections row"),
        ('{"labels": []}', 'expected an object like {"path"'),
        ('{"path": "a.jpg", "labels": "dog"}', "'labels' must be a list"),
        ('{"path": "a.jpg", "unknown": "dog"}', '"unknown" must be "*" or []'),
    ],
)
def test_a_damaged_file_is_one_clear_error(tmp_path, line, problem):
    path = tmp_path / "tags.corrections.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InputFileError) as caught:
        Corrections(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_a_failed_write_changes_nothing(review, tagged, monkeypatch):
    a = photo_id(review, "a.jpg")
    review.decide(a, "dog", "accept")
    before = (tagged["root"] / "tags.corrections.jsonl").read_bytes()

    def full_disk(path, text):
        raise OutputError(f"{path}: no space left on device")

    monkeypatch.setattr("mkt_tag.review.corrections.atomic_write_text", full_disk)
    with pytest.raises(OutputError):
        review.decide(a, "beach", "reject")
    assert review.photo(a)["tags"][1]["verdict"] == ""
    assert review.corrections.get(review.photos[a].path) == Decisions({"dog": True})
    assert (tagged["root"] / "tags.corrections.jsonl").read_bytes() == before


def test_datasets_read_it_as_training_data(review, tagged):
    """Accepted and added: +1; rejected: -1; the rest unknown (0) until the photo is
    reviewed, then -1."""
    a, b, c = (photo_id(review, name) for name in ("a.jpg", "b.png", "c.jpg"))
    review.decide(a, "beach", "reject")
    review.decide(a, "sunset", "accept")
    review.decide(b, "cat", "reject")
    review.mark_reviewed(c)
    data = datasets.load(tagged["root"] / "tags.corrections.jsonl", LABELS, strict=True)
    assert data.labels == LABELS
    targets = {path.name: list(row) for path, row in zip(data.paths, data.targets, strict=True)}
    # cat, dog, beach, sunset, traffic light
    assert targets == {
        "a.jpg": [0, 0, -1, 1, 0],
        "b.png": [-1, 0, 0, 0, 0],
        "c.jpg": [-1, 1, -1, 1, -1],
    }


def test_the_wildcard_in_a_csv_data_file(tmp_path):
    """`*` in a CSV `unknown` cell: every label the row lists neither way is unknown."""
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    data_file = tmp_path / "data.csv"
    data_file.write_text(
        "path,labels,negatives,unknown\na.jpg,dog,cat,*\nb.jpg,dog,cat,\n", encoding="utf-8"
    )
    data = datasets.load(data_file, ["cat", "dog", "beach"], strict=True)
    assert np.array_equal(data.targets, [[-1, 1, 0], [-1, 1, -1]])
    assert not data.problems  # "*" is not reported as a label outside the vocabulary
