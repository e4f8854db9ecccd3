"""A person's decisions belong to the person: after `review --apply`, accepted and added
labels are their keywords (`untag` and every later `tag` leave them), and a rejected label
never comes back from a later `tag` run, whatever its mode or vocabulary.

The whole path: `mkt-tag tag` with the tiny model, decisions through the library API,
`apply_corrections`, then `untag` and `tag` again (CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mkt_tag.cli import app
from mkt_tag.keywords import SUBJECT
from mkt_tag.review import open_review
from mkt_tag.review.apply import apply_corrections
from mkt_tag.sidecar_paths import sidecar_path
from mkt_tag.sidecars import person_labels, read_sidecar_tags
from mkt_tag.xmp import XmpDocument
from tests.conftest import TINY_CONFIG, make_photo
from tests.review.conftest import photo_id

runner = CliRunner()
LABELS = ["cat", "dog", "beach", "sunset", "traffic light"]


def run(*args: str | Path) -> Result:
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def tag(folder: Path, labels: Path, fmt: str, *extra: str | Path) -> Result:
    """Every label of ``labels`` on every photo: top-k as large as the vocabulary, no
    threshold: a label that is left out was left out by the rules under test."""
    k = len(labels.read_text().split())
    return run(
        "tag", folder, "--labels", labels, "--model", TINY_CONFIG, "--sidecar", fmt,
        "--top-k", str(k), *extra,
    )  # fmt: skip


def keywords(image: Path, fmt: str) -> list[str]:
    return read_sidecar_tags(sidecar_path(image, fmt), fmt)


@pytest.fixture
def decided(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, object]:
    """Two photos tagged with every label of four, a.jpg's sidecar holding the person's
    `holiday` first. On a.jpg `dog` accepted, `cat` rejected, `traffic light` added (beach
    and sunset undecided); on b.jpg `beach` rejected and the photo marked reviewed (cat,
    dog, sunset accepted). The decisions applied."""
    fmt = request.param
    folder = tmp_path / "photos"
    a, b = make_photo(folder / "a.jpg", seed=1), make_photo(folder / "b.jpg", seed=2)
    if fmt == "xmp":
        document = XmpDocument()
        document.update({SUBJECT: ["holiday"]}, None)
        sidecar_path(a, "xmp").write_text(document.to_text(), encoding="utf-8")
    else:
        sidecar_path(a, "json").write_text(json.dumps({"tags": ["holiday"]}), encoding="utf-8")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS[:4]) + "\n", encoding="utf-8")  # no traffic light
    results = tmp_path / "tags.csv"
    tag(folder, labels, fmt, "-o", results)
    vocabulary = tmp_path / "vocabulary.txt"  # the review's: traffic light can be added
    vocabulary.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    review = open_review(results, vocabulary)
    review.decide(photo_id(review, "a.jpg"), "dog", "accept")
    review.decide(photo_id(review, "a.jpg"), "cat", "reject")
    review.decide(photo_id(review, "a.jpg"), "traffic light", "accept")  # added
    review.decide(photo_id(review, "b.jpg"), "beach", "reject")
    review.mark_reviewed(photo_id(review, "b.jpg"))  # cat, dog, sunset: accepted
    applied = apply_corrections(review, fmt)
    assert applied.failures == []
    return {"fmt": fmt, "folder": folder, "a": a, "b": b, "labels": labels, "root": tmp_path}


FORMATS = pytest.mark.parametrize("decided", ["xmp", "json"], indirect=True)


@FORMATS
def test_apply_gives_accepted_and_added_labels_to_the_person(decided):
    fmt, a, b = decided["fmt"], decided["a"], decided["b"]
    assert "cat" not in keywords(a, fmt) and "beach" not in keywords(b, fmt)
    assert set(person_labels(sidecar_path(a, fmt), fmt)) == {"holiday", "dog", "traffic light"}
    assert set(person_labels(sidecar_path(b, fmt), fmt)) == {"cat", "dog", "sunset"}
    # a.jpg's undecided tags (beach, sunset) are still mkt-tag's, and so untag takes them.
    assert {"beach", "sunset"} <= set(keywords(a, fmt))


@FORMATS
def test_untag_leaves_the_persons_decisions(decided):
    fmt, a, b = decided["fmt"], decided["a"], decided["b"]
    run("untag", decided["folder"])
    assert sorted(keywords(a, fmt)) == ["dog", "holiday", "traffic light"]
    assert sorted(keywords(b, fmt)) == ["cat", "dog", "sunset"]


@FORMATS
@pytest.mark.parametrize("mode", ["--overwrite", "--append", "stale", "skip"])
def test_no_later_tag_run_brings_a_rejected_label_back(decided, mode):
    fmt, a, b = decided["fmt"], decided["a"], decided["b"]
    labels = decided["labels"]
    if mode == "stale":  # another vocabulary: every photo is stale and re-tagged
        labels = decided["root"] / "other.txt"
        labels.write_text("cat\ndog\nbeach\nsunset\nmountain\n", encoding="utf-8")
        extra: list[str] = []
    else:
        extra = [] if mode == "skip" else [mode]
    tag(decided["folder"], labels, fmt, *extra)
    assert "cat" not in keywords(a, fmt) and "beach" not in keywords(b, fmt)
    assert {"holiday", "dog", "traffic light"} <= set(keywords(a, fmt))
    assert {"cat", "dog", "sunset"} <= set(keywords(b, fmt))
    if mode == "stale":
        assert "mountain" in keywords(a, fmt)  # the new vocabulary's tags are written
    # ...and untag after it still leaves the person's keywords.
    run("untag", decided["folder"])
    assert sorted(keywords(a, fmt)) == ["dog", "holiday", "traffic light"]


@FORMATS
def test_overwrite_with_another_vocabulary_keeps_the_persons_keywords(decided):
    fmt, a = decided["fmt"], decided["a"]
    other = decided["root"] / "other.txt"
    other.write_text("cat\nmountain\nforest\n", encoding="utf-8")  # dog is no longer a label
    tag(decided["folder"], other, fmt, "--overwrite")
    assert set(keywords(a, fmt)) == {"holiday", "dog", "traffic light", "mountain", "forest"}


@pytest.mark.parametrize("decided", ["xmp"], indirect=True)
def test_the_record_lists_the_rejections_and_untag_forgets_them(decided):
    a = decided["a"]
    record = XmpDocument(sidecar_path(a, "xmp").read_bytes()).record
    assert record is not None and record.rejected == ["cat"]
    assert "<mkttag:Rejected>" in sidecar_path(a, "xmp").read_text()
    run("untag", decided["folder"])  # the record goes, and the rejections with it
    tag(decided["folder"], decided["labels"], "xmp")
    assert "cat" in keywords(a, "xmp")


@pytest.mark.parametrize("decided", ["json"], indirect=True)
def test_the_json_record_lists_the_rejections(decided):
    document = json.loads(sidecar_path(decided["a"], "json").read_text())
    assert document["mkt-tag"]["rejected"] == ["cat"]
    assert "cat" not in [entry["label"] for entry in document["mkt-tag"]["tags"]]


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="needs exiftool")
@pytest.mark.parametrize("decided", ["xmp"], indirect=True)
def test_embed_keeps_out_what_the_sidecar_says_was_rejected(decided):
    """`review --apply` writes sidecars; a later `tag --embed` reads the rejections there,
    keeps them out of the file and lists them in the file's own record."""
    pytest.importorskip("exiftool")
    from mkt_tag.embedded import EmbeddedMetadata

    a = decided["a"]
    tag(decided["folder"], decided["labels"], "xmp", "--embed")
    with EmbeddedMetadata() as embedded:
        found = embedded.exiftool.read(a, a.absolute())
    inside = XmpDocument(found.xmp)
    assert "cat" not in inside.fields()[SUBJECT] and "dog" in inside.fields()[SUBJECT]
    assert "cat" not in found.iptc.get("IPTC:Keywords", [])
    assert inside.record is not None and inside.record.rejected == ["cat"]
