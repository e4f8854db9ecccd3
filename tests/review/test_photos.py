"""Reading the photos of a review: the fast reader of results files against ``read_rows``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mkt_tag.errors import InputFileError
from mkt_tag.results import Tag, TagResult, read_rows, write_results
from mkt_tag.review import open_review
from mkt_tag.review.photos import Photo, load_photos, read_scores

RESULTS = [
    TagResult(Path("/photos/a.jpg"), [Tag("dog", 0.91), Tag("café", 0.5), Tag("beach", 0.5)]),
    TagResult(Path("relative/b.png"), [], run="f00d"),
    TagResult(Path('/photos/"quoted" ö, also|pipe.jpg'), [Tag("sunset", 0.25)]),
]


def as_scores(path: Path) -> list[tuple[str, dict[str, float]]]:
    """What read_scores must give: read_rows's rows as {label: score}."""
    return [(name, {tag.label: tag.score for tag in tags}) for name, tags, _ in read_rows(path)]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_read_scores_reads_what_tag_writes_as_read_rows_does(tmp_path, suffix, monkeypatch):
    path = tmp_path / f"tags{suffix}"
    write_results(path, RESULTS)
    expected = as_scores(path)
    # by its own fast path: read_rows is only for what tag does not write
    monkeypatch.setattr("mkt_tag.review.photos.read_rows", None)
    assert read_scores(path) == expected
    assert read_scores(path)[0] == ("/photos/a.jpg", {"dog": 0.91, "café": 0.5, "beach": 0.5})


def test_photos_keep_plain_scores_and_give_tags_best_first(tmp_path):
    path = tmp_path / "tags.jsonl"
    write_results(path, RESULTS)
    photos = load_photos(path)
    assert [photo.filename for photo in photos] == sorted(
        ["/photos/a.jpg", os.path.abspath("relative/b.png"), '/photos/"quoted" ö, also|pipe.jpg']
    )
    photo = next(photo for photo in photos if photo.path.name == "a.jpg")
    assert photo.tags == [Tag("dog", 0.91), Tag("beach", 0.5), Tag("café", 0.5)]  # ties by label
    unsorted = Photo(0, "/x.jpg", {"a": 0.1, "c": 0.9, "b": 0.9})
    assert unsorted.ranked() == [("b", 0.9), ("c", 0.9), ("a", 0.1)]


JSONL_CASES = {
    "blank lines": '\n{"path": "/a.jpg", "tags": []}\n\n',
    "spaces around": '  {"path": "/a.jpg", "tags": []}  \n',
    "CRLF": '{"path": "/a.jpg", "tags": []}\r\n{"path": "/b.jpg", "tags": []}\r\n',
    "no newline at the end": '{"path": "/a.jpg", "tags": [{"label": "x", "score": 1}]}',
    "other keys": '{"path": "/a.jpg", "tags": [{"label": "x", "score": 0.5, "n": 1}], "z": 2}\n',
    "two on a line": '{"path": "/a.jpg", "tags": []} {"path": "/b.jpg", "tags": []}\n',
    "two on a line, a comma": '{"path": "/a.jpg", "tags": []}, {"path": "/b.jpg", "tags": []}\n',
    "over two lines": '{"path": "/a.jpg",\n "tags": []}\n',
    "a line break in a label": '{"path": "/a.jpg", "tags": [{"label": "a\u2028b", "score": 1}]}\n',
    "tags an object": '{"path": "/a.jpg", "tags": {}}\n',
    "tags a text": '{"path": "/a.jpg", "tags": ""}\n',
    "tags missing": '{"path": "/a.jpg"}\n',
    "a bare label": '{"path": "/a.jpg", "tags": ["dog"]}\n',
    "no score": '{"path": "/a.jpg", "tags": [{"label": "dog"}]}\n',
    "score null": '{"path": "/a.jpg", "tags": [{"label": "dog", "score": null}]}\n',
    "score true": '{"path": "/a.jpg", "tags": [{"label": "dog", "score": true}]}\n',
    "score a text": '{"path": "/a.jpg", "tags": [{"label": "dog", "score": "0.5"}]}\n',
    "label a number": '{"path": "/a.jpg", "tags": [{"label": 3, "score": 0.5}]}\n',
    "label a list": '{"path": "/a.jpg", "tags": [{"label": [], "score": 0.5}]}\n',
    "path null": '{"path": null, "tags": []}\n',
    "run null": '{"path": "/a.jpg", "tags": [], "run": null}\n',
    "a list": "[1, 2]\n",
    "not JSON": "path,tags\n",
    "a byte-order mark": '\ufeff{"path": "/a.jpg", "tags": []}\n',
}
CSV_CASES = {
    "no run column": "path,tags,scores\n/a.jpg,dog|cat,0.9|0.1\n",
    "another header": "file,tags,scores,run\n/a.jpg,dog,0.9,\n",
    "a column short": "path,tags,scores,run\n/a.jpg,dog,0.9\n",
    "more labels than scores": "path,tags,scores,run\n/a.jpg,dog|cat,0.9,\n",
    "a score not a number": "path,tags,scores,run\n/a.jpg,dog,high,\n",
    "empty": "",
}
JSON_CASES = {
    "an object": '{"path": "/a.jpg", "tags": []}',
    "an array": '[{"path": "/a.jpg", "tags": [{"label": "x", "score": 0.5}]}]',
    "an array, a bad tag": '[{"path": "/a.jpg", "tags": [{"label": "x"}]}]',
}


@pytest.mark.parametrize(
    ("suffix", "text"),
    [(".jsonl", text) for text in JSONL_CASES.values()]
    + [(".csv", text) for text in CSV_CASES.values()]
    + [(".json", text) for text in JSON_CASES.values()],
    ids=[*JSONL_CASES, *CSV_CASES, *JSON_CASES],
)
def test_read_scores_accepts_and_rejects_exactly_what_read_rows_does(tmp_path, suffix, text):
    path = tmp_path / f"tags{suffix}"
    path.write_text(text, encoding="utf-8", newline="")
    try:
        expected: object = as_scores(path)
    except InputFileError as error:
        with pytest.raises(InputFileError) as raised:
            read_scores(path)
        assert str(raised.value) == str(error)  # the same words, naming what is wrong
    else:
        assert read_scores(path) == expected


def test_many_photos_in_batches(tmp_path):
    path = tmp_path / "tags.jsonl"
    rows = [
        {"path": f"/p/{n:05d}.jpg", "tags": [{"label": "x", "score": n / 30_000}]}
        for n in range(25_000)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    found = read_scores(path)
    assert len(found) == 25_000 and found[-1] == ("/p/24999.jpg", {"x": 24_999 / 30_000})


def test_the_summary_names_the_files_and_keeps_their_paths(tmp_path):
    results = tmp_path / "tags.csv"
    write_results(results, RESULTS[:1])
    labels = tmp_path / "labels.txt"
    labels.write_text("dog\n", encoding="utf-8")
    summary = open_review(results, labels).summary()
    assert summary["results_name"] == "tags.csv"
    assert summary["corrections_name"] == "tags.corrections.jsonl"
    assert summary["results"] == str(results)
    assert summary["corrections"] == str(tmp_path / "tags.corrections.jsonl")


def test_images_in_buckets_are_left_out_and_said(tmp_path):
    """A results file of `tag --engine ray` over a bucket holds URIs: the page shows local
    photos, so those rows are left out with a warning, never turned into local paths."""
    local = tmp_path / "a.jpg"
    local.write_bytes(b"")
    path = tmp_path / "tags.csv"
    path.write_text(
        "path,tags,scores,run\n"
        f"{local},sky,0.5,\n"
        "s3://bucket/photos/b.jpg,dog,0.3,\n"
        "gs://other/c.jpg,dog,0.2,\n"
    )
    said: list[str] = []
    photos = load_photos(path, said.append)
    assert [photo.filename for photo in photos] == [str(local)]
    assert said == [
        f"{path}: left out 2 image(s) in a bucket (s3://bucket/photos/b.jpg, ...): review "
        "shows local photos: copy them to a folder and tag that to review them"
    ]
    path.write_text("path,tags,scores,run\ns3://bucket/photos/b.jpg,dog,0.3,\n")
    with pytest.raises(InputFileError, match="no local photos to review, only 1 image"):
        load_photos(path)
