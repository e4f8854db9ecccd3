"""Images given by URI stay URIs: parsed, listed from S3 and GCS servers on this machine
(``tests/object_stores.py``), fetched, and kept whole in results files, their journals, shards
and merges."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkt_tag import remote
from mkt_tag.errors import UsageError
from mkt_tag.merge import merge
from mkt_tag.remote import RemoteImage, parse_input, scan_inputs
from mkt_tag.results import ResultsFile, Tag, TagResult, image_key, read_results, write_results
from mkt_tag.shards import Shard
from tests import object_stores
from tests.conftest import make_photo
from tests.object_stores import Stores

S3 = RemoteImage("s3://bucket/photos/a.jpg")


@pytest.fixture
def stores() -> Stores:
    return object_stores.start()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("s3://bucket/photos/", RemoteImage("s3://bucket/photos/")),
        ("gs://bucket/a.jpg", RemoteImage("gs://bucket/a.jpg")),
        ("S3://bucket", RemoteImage("s3://bucket")),
        (Path("s3://bucket/photos"), RemoteImage("s3://bucket/photos")),  # a Path folds "//"
        (S3, S3),
        ("photos", Path("photos")),
        ("/mnt/photos/a:b.jpg", Path("/mnt/photos/a:b.jpg")),
        ("C:/photos", Path("C:/photos")),  # a drive, not a scheme
        ("a:b", Path("a:b")),
    ],
)
def test_uris_of_s3_and_gcs_are_remote_images(given, expected):
    assert parse_input(given) == expected


def test_other_schemes_and_uris_without_a_bucket_are_refused_in_one_line():
    with pytest.raises(UsageError) as raised:
        parse_input("https://example.com/a.jpg")
    assert str(raised.value) == (
        "https://example.com/a.jpg: mkt-tag reads URIs of s3:// and gs:// only; download or "
        "mount the images and give their path"
    )
    for given in ("s3://", "gs:///"):
        with pytest.raises(UsageError, match=r"^\S+: name a bucket \((s3|gs)://BUCKET or "):
            parse_input(given)


def test_a_remote_image_is_named_by_its_uri():
    assert (S3.name, S3.suffix, S3.scheme, S3.path) == (
        "a.jpg",
        ".jpg",
        "s3",
        "bucket/photos/a.jpg",
    )
    assert str(S3) == S3.uri == image_key(S3)
    assert TagResult("s3://bucket/photos/a.jpg").path == S3  # a row's path read back
    assert TagResult("photos/a.jpg").path == Path("photos/a.jpg")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_results_files_keep_uris(tmp_path, suffix):
    rows = [TagResult(S3, [Tag("cat", 0.5)], "run1"), TagResult(tmp_path / "b.jpg", [], "run1")]
    write_results(tmp_path / f"r{suffix}", rows)
    assert read_results(tmp_path / f"r{suffix}") == rows
    assert "s3://bucket/photos/a.jpg" in (tmp_path / f"r{suffix}").read_text()


def test_a_killed_run_resumes_its_uris_from_the_journal(tmp_path):
    output = tmp_path / "tags.csv"
    results = ResultsFile(output)
    results.add([TagResult(S3, [Tag("cat", 0.5)], "run1")])
    results.close()  # killed before finish(): the journal holds the row
    with ResultsFile(output) as resumed:
        assert list(resumed.done()) == ["s3://bucket/photos/a.jpg"]
        assert resumed.done()[S3.uri].path == S3
        resumed.finish()
    assert output.read_text().splitlines()[1] == "s3://bucket/photos/a.jpg,cat,0.5000,run1"


def test_shards_and_merges_go_by_uri(tmp_path):
    images = [RemoteImage(f"s3://bucket/{name}.jpg") for name in "dbca"]
    first, second = Shard(1, 2).select(images), Shard(2, 2).select(images)
    assert (first, second) == ([images[1], images[3]], [images[0], images[2]])  # b a | d c
    for index, part in ((1, first), (2, second)):
        rows = [TagResult(image, [Tag("cat", 0.5)], "run1") for image in part]
        write_results(tmp_path / f"tags.shard-{index}-of-2.csv", rows)
    parts = [tmp_path / f"tags.shard-{index}-of-2.csv" for index in (1, 2)]
    report = merge(tmp_path / "tags.jsonl", parts)
    assert report.complete and report.rows == 4
    assert [row.path for row in read_results(tmp_path / "tags.jsonl")] == sorted(images)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_prefix_is_listed_as_a_folder(stores: Stores, tmp_path, scheme):
    bucket = f"{scheme}://listing-{scheme}"
    for name in ["a.jpg", "b.PNG", "sub/c.jpg", ".hidden.jpg", ".cache/d.jpg", "notes.txt"]:
        stores.put(f"{bucket}/photos/{name}", b"bytes")
    stores.put(f"{bucket}/photos/e.jxl", b"bytes")  # a format mkt-tag cannot read yet
    stores.put(f"{bucket}/photos-2/f.jpg", b"bytes")  # beside the prefix, not under it
    prefix = RemoteImage(f"{bucket}/photos/")

    flat, deep = scan_inputs([prefix]), scan_inputs([prefix], recursive=True)

    assert [str(image) for image in flat.images] == [
        f"{bucket}/photos/a.jpg",
        f"{bucket}/photos/b.PNG",
    ]
    assert [str(image) for image in deep.images] == [
        f"{bucket}/photos/a.jpg",
        f"{bucket}/photos/b.PNG",
        f"{bucket}/photos/sub/c.jpg",
    ]
    assert flat.unreadable == deep.unreadable == [RemoteImage(f"{bucket}/photos/e.jxl")]
    assert not (flat.errors or deep.errors)
    note = RemoteImage(f"{bucket}/photos/notes.txt")  # named: kept whatever its extension
    local = make_photo(tmp_path / "z.jpg")
    mixed = scan_inputs([note, local, note])
    assert mixed.images == [local, note]
    missing = [RemoteImage(f"{bucket}/nope/"), RemoteImage(f"{scheme}://no-such-bucket/photos")]
    found = scan_inputs(missing)
    assert [str(error) for error in found.errors] == [
        f"{bucket}/nope/: no object or prefix of that name",
        f"{scheme}://no-such-bucket/photos: no such bucket",
    ]
    assert found.missing == missing and not found.images


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_objects_are_fetched_into_temporary_files(stores: Stores, tmp_path, scheme):
    uri = stores.put(f"{scheme}://fetching-{scheme}/a.jpg", b"jpeg bytes")
    local = tmp_path / "b.jpg"
    gone = RemoteImage(f"{scheme}://fetching-{scheme}/gone.jpg")

    with remote.fetched([RemoteImage(uri), local, gone]) as files:
        copy = files[0]
        assert isinstance(copy, Path) and copy.suffix == ".jpg"
        assert copy.read_bytes() == b"jpeg bytes"
        assert files[1:] == [local, "file not found"]
    assert not copy.exists()


def test_the_library_refuses_what_the_command_line_refuses(tmp_path):
    from mkt_tag.tagging.job import LocalTagger, TagJob, plan
    from mkt_tag.tagging.selection import Selection

    with pytest.raises(UsageError, match=r"^s3://b/p: give --output"):
        plan(TagJob(["s3://b/p"], Selection()))
    with pytest.raises(UsageError, match=r"^--sidecar: not with images given as URIs"):
        plan(TagJob(["s3://b/p"], Selection(), output=tmp_path / "r.csv", sidecar="xmp"))
    with pytest.raises(UsageError, match=r"^s3://b/a.jpg: the local engine reads local paths"):
        LocalTagger(None, None).tag_files([RemoteImage("s3://b/a.jpg")], Selection(), 1)
    assert not (tmp_path / "r.csv").exists()
